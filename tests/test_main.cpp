// The test binary's main (doctest), plus proof that fbi_llm.hpp can be included from two translation units:
// this file and every other tests/*.cpp include it and are linked into one binary.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "../fbi_llm.hpp"

int second_tu_param_count();  // defined in test_io.cpp

TEST_CASE("U1 header links from two translation units") {
    fbi::Config cfg;
    auto model = fbi::build_model<float>(cfg, 1);
    CHECK(second_tu_param_count() == int(model.params.size()));
}
