// train_tiny: the whole FBI-LLM recipe on TinyShakespeare, small enough for a laptop. Read it top to bottom:
//   0. settings: every flag with its default, checked before anything is written
//   1. the full-precision teacher: trained, or reused from OUT when its config, data and recipe match
//   2. the 1-bit FBI student FROM RANDOM INIT, trained by autoregressive distillation ([D1]) from the frozen teacher
//   3. evaluation of both on the validation split, the student packed to 1 bit ([P1], [S7]) and evaluated again,
//      samples from both, a table, and a JSON summary (checkpoints and a CSV log per run are written on the way)
// Run again, it reuses finished runs and continues an interrupted one from its checkpoint, bit for bit (a record
// beside each checkpoint says which command wrote it; tests/resume_kill.sh kills it 14 times to check).
// Ablations (the FBI-LLM paper's two questions):  --student-loss ce (no teacher)  --student-init teacher
// Other students (b1.58 [Q1]–[Q3], DB [Q4]–[Q6], DAD [D3]):  --student-quant b1.58|db|fp32  --student-loss dad
// (make compare runs them all).
#include "../common.hpp"
#include "../json_out.hpp"

using namespace fbi;
using namespace example;

// ---- 0. settings ------------------------------------------------------------------------------------------------
static const char* kUsage =
    "usage: train_tiny --data PATH [--out DIR] [options]\n"
    "       train_tiny --tokens FILE.fbitoks [--out DIR] [options]   a corpus already tokenized (build/spm_tokenize;\n"
    "                                            make train-tiny TOKENIZER=bpe): losses also per character\n"
    "  --teacher-steps 2000  --student-steps 2000  --batch 12  --context 64  --seed 1337\n"
    "  --width 128 --layers 4 --heads 4         the shape of the student and of the teacher\n"
    "  --lr 1e-3 --lr-min 1e-4 --warmup 100      schedule ([O3]) of both runs; --lr-min is the teacher's floor\n"
    "  --student-lr 1e-3 --student-lr-min 0      the student's peak and floor: its cosine decays to zero (1-bit signs\n"
    "                                            keep flipping at 1e-4; README, \"The student's learning-rate floor\")\n"
    "  --student-loss ad|ce|mix|dad              AD = distillation (FBI-LLM), ce = no teacher, mix = 0.5/0.5,\n"
    "                                            dad = DB-LLM's weighted distillation (--dad-weight entropy|disagreement|uniform)\n"
    "  --student-quant fbi|b1.58|db|fp32         the student's block linears ([F2], [Q1], [Q5]; fp32 = none)\n"
    "  --student-init random|teacher             from scratch (FBI-LLM) or from the teacher's weights\n"
    "  --wd 0.1 --decay matrices|all             AdamW weight decay ([O1]): on 2-D weights only, or on everything\n"
    "  --scale-bits 32                           packed file: α, β as fp32 (32, exact) or 2^N-level codebooks (1..8)\n"
    "  --emb fp16  --head fp16                   packed file: the embedding and the LM head in fp16 (default), fp32 or int8\n"
    "  --eval-every 500 --samples 300            progress evaluation interval (0 = only at the end), sample length\n"
    "  --eval-windows 0                          final evaluation on this many evenly spaced windows (0 = all)\n"
    "  --ckpt-every N                            save each run's checkpoint (with optimizer state) every N steps,\n"
    "                                            atomically; default: --eval-every. 0 = only at the end\n"
    "  --fresh                                   train the student (and an unfinished teacher) from step 0 instead of\n"
    "                                            resuming or reusing; a finished teacher of the same recipe is reused\n"
    "Interrupted (Ctrl-C, kill, a closed lid)? Run the same command again: it continues from the newest checkpoint.\n"
    "Removed (the header's TrainOptions and AdamW still hold them): --teacher-width, --teacher-layers, --teacher-lr,\n"
    "--teacher-lr-min, --student-wd, --student-decay, --beta2, --tag. Test hooks (not flags): FBI_INJECT_NAN=RUN:STEP\n"
    "(a NaN loss at STEP) and FBI_TEST_KILL=RUN:EVENT:STEP (examples/common.hpp, TestKill).";

struct Settings {
    std::string data, tokens, out = "runs/tiny";
    int context = 64, batch = 12, width = 128, layers = 4, heads = 4;
    int teacher_steps = 2000, student_steps = 2000, warmup = 100;
    double lr = 1e-3, lr_min = 1e-4, student_lr = 1e-3, student_lr_min = 0.0, wd = 0.1;
    uint64_t seed = 1337;
    Quant student_quant = Quant::FBI;
    std::string student_loss = "ad", student_init = "random", dad_weight = "entropy", decay = "matrices";
    RowFormat emb_format = RowFormat::F16, head_format = RowFormat::F16;
    int scale_bits = 32, eval_every = 500, ckpt_every = 500, eval_windows = 0, samples = 300;
    bool fresh = false;
    std::string inject_nan;  // FBI_INJECT_NAN (test hook): "teacher:7" or "student:3"
    TestKill kill;           // FBI_TEST_KILL (test hook)
};

// Every flag is checked here, before the corpus is read or anything is written; each message names its flag.
static Settings parse_settings(int argc, char** argv) {
    Args a(argc, argv, kUsage, {"fresh"});
    a.only({"data", "tokens", "out", "context", "batch", "width", "layers", "heads", "teacher-steps", "student-steps", "warmup",
            "lr", "lr-min", "student-lr", "student-lr-min", "wd", "seed", "student-quant", "student-loss",
            "student-init", "dad-weight", "decay", "scale-bits", "emb", "head", "eval-every", "ckpt-every", "eval-windows", "samples",
            "fresh"});
    check_thread_env();
    Settings s;
    s.data = a.str("data", ""), s.tokens = a.str("tokens", ""), s.out = a.str("out", s.out);
    if (s.data.empty() == s.tokens.empty())
        throw std::invalid_argument("give --data PATH (characters; make train-tiny passes it) or --tokens FILE (subwords), one of them");
    if (s.out.empty()) throw std::invalid_argument("--out must name a directory");
    const long kBig = 1000000000;  // steps, intervals: a billion is far beyond a laptop run
    s.context = a.integer("context", s.context, 1, kMaxFileContext), s.batch = a.integer("batch", s.batch, 1, kBig);
    if (double(s.batch) * s.context >= 2147483648.0)
        throw std::invalid_argument("--batch × --context must be below 2^31 (the rows of one batch), got " +
                                    std::to_string(s.batch) + " × " + std::to_string(s.context));
    s.width = a.integer("width", s.width, 1, 1 << 16), s.layers = a.integer("layers", s.layers, 1, 4096);
    s.heads = a.integer("heads", s.heads, 1, s.width);
    if (s.width % s.heads != 0 || (s.width / s.heads) % 2 != 0)
        throw std::invalid_argument("--width " + std::to_string(s.width) + " / --heads " + std::to_string(s.heads) +
                                    " must be a whole, even head size (RoPE rotates pairs); e.g. --heads 4 with --width 128");
    s.teacher_steps = a.integer("teacher-steps", s.teacher_steps, 0, kBig);
    s.student_steps = a.integer("student-steps", s.student_steps, 0, kBig);
    s.warmup = a.integer("warmup", s.warmup, 0, kBig);
    s.lr = a.real("lr", s.lr, 0, true), s.lr_min = a.real("lr-min", s.lr_min, 0);
    s.student_lr = a.real("student-lr", s.lr, 0, true), s.student_lr_min = a.real("student-lr-min", s.student_lr_min, 0);
    if (s.lr_min > s.lr) throw std::invalid_argument("--lr-min " + Args::shown(s.lr_min) + " is above --lr " + Args::shown(s.lr));
    if (s.student_lr_min > s.student_lr)
        throw std::invalid_argument("--student-lr-min " + Args::shown(s.student_lr_min) + " is above --student-lr " +
                                    Args::shown(s.student_lr));
    s.wd = a.real("wd", s.wd, 0), s.seed = a.u64("seed", s.seed);
    s.student_quant = quant_from_name(a.str("student-quant", "fbi"));
    s.student_loss = a.str("student-loss", s.student_loss), s.student_init = a.str("student-init", s.student_init);
    s.dad_weight = a.str("dad-weight", s.dad_weight), s.decay = a.str("decay", s.decay);
    (void)loss_from_name(s.student_loss);  // both throw on an unknown name
    (void)dad_weight_from_name(s.dad_weight);
    if (s.student_init != "random" && s.student_init != "teacher")
        throw std::invalid_argument("--student-init must be random or teacher");
    if (s.decay != "matrices" && s.decay != "all") throw std::invalid_argument("--decay must be matrices or all");
    s.emb_format = a.row_format("emb", s.emb_format), s.head_format = a.row_format("head", s.head_format);
    s.scale_bits = a.integer("scale-bits", s.scale_bits, -kBig, kBig);  // checked now, not after two training runs
    if (!valid_scale_bits(s.scale_bits))
        throw std::invalid_argument("--scale-bits must be 32 (fp32 scales) or 1..8 (codebook), not " +
                                    std::to_string(s.scale_bits));
    s.eval_every = a.integer("eval-every", s.eval_every, 0, kBig);
    s.ckpt_every = a.integer("ckpt-every", s.eval_every, 0, kBig);
    s.eval_windows = a.integer("eval-windows", s.eval_windows, 0, kBig), s.samples = a.integer("samples", s.samples, 0, 1 << 24);
    s.fresh = a.has("fresh");
    if (const char* hook = std::getenv("FBI_INJECT_NAN")) s.inject_nan = hook;
    s.kill = TestKill::from_env();
    return s;
}

// The corpus, split 90/10 (checked before anything is created on disk): characters (--data), or subword ids
// from a token file (--tokens). `vocab` is what checkpoints store; chars_per_val_token turns a validation
// loss per token into one per character (1 for the character model).
struct Data {
    std::string text;
    CharTokenizer tok;
    PieceTokenizer pieces;  // --tokens: the subword vocabulary
    std::vector<int> train, val;
    int V = 0;
    std::string vocab;
    double chars_per_val_token = 1;
    bool subwords() const { return !pieces.pieces.empty(); }
    std::string decode(const std::vector<int>& ids) const { return subwords() ? pieces.decode(ids) : tok.decode(ids); }
    std::vector<int> newline() const { return subwords() ? std::vector<int>{pieces.id_of("\n")} : tok.encode("\n"); }
};
static Data load_data(const Settings& s) {
    Data d;
    if (!s.tokens.empty()) {
        std::vector<int> ids = load_token_file(s.tokens, d.pieces);
        if (ids.size() < size_t(2 * (s.context + 1) * 10))
            throw std::invalid_argument(s.tokens + ": " + std::to_string(ids.size()) + " tokens, too few for --context " + std::to_string(s.context));
        d.text = d.pieces.decode(ids);
        split_90_10(ids, d.train, d.val);
        d.V = d.pieces.size(), d.vocab = d.pieces.blob();
        size_t val_chars = 0;
        for (int id : d.val) val_chars += d.pieces.pieces[size_t(id)].size();
        d.chars_per_val_token = double(val_chars) / d.val.size();
        std::printf("data: %zu characters as %zu subword tokens (%.2f characters per validation token), vocabulary %d, "
                    "train %zu / val %zu tokens\n", d.text.size(), ids.size(), d.chars_per_val_token, d.V, d.train.size(), d.val.size());
        return d;
    }
    d.text = load_corpus(s.data, 2 * (s.context + 1) * 10, s.context);
    d.tok = CharTokenizer::from_text(d.text);
    split_90_10(d.tok.encode(d.text), d.train, d.val);
    d.V = d.tok.size(), d.vocab = d.tok.chars;
    std::printf("data: %zu characters, vocabulary %d, train %zu / val %zu tokens\n", d.text.size(), d.V,
                d.train.size(), d.val.size());
    return d;
}

static Config model_config(const Settings& s, int V, Quant q) {
    Config c;
    c.V = V, c.C = s.width, c.L = s.layers, c.NH = s.heads, c.F = swiglu_width(s.width), c.T = s.context, c.quant = q;
    check_config(c);
    return c;
}

// ---- resuming: which command wrote a checkpoint ---------------------------------------------------------------
// Each run's checkpoint X.ckpt has a record beside it, X.ckpt.meta: one "key=value" line per setting that decides
// the run's result (the model, the data, the recipe, the seed; a student's also names its teacher's record).
// Running a command whose record matches reuses a finished checkpoint, or continues an unfinished one from its
// step with its optimizer state: batches ([get_batch] is a pure function of seed and step), learning rate and
// flip counts then come out bit for bit as in a run that was never interrupted.
using Record = std::vector<std::pair<std::string, std::string>>;
static std::string g17(double x) { char b[40]; std::snprintf(b, sizeof b, "%.17g", x); return b; }
static std::string record_text(const Record& r) {
    std::string t;
    for (const auto& kv : r) t += kv.first + "=" + kv.second + "\n";
    return t;
}
static Record parse_record(const std::string& text) {
    Record r;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
        if (size_t eq = line.find('='); eq != std::string::npos) r.push_back({line.substr(0, eq), line.substr(eq + 1)});
    return r;
}
static std::string record_value(const Record& r, const std::string& key) {
    for (const auto& kv : r)
        if (kv.first == key) return kv.second;
    return "";
}
// --eval-every decides only which rows of the log carry a validation loss, not the checkpoint: a finished run is
// reused whatever it was, an unfinished one resumes only with the same (so that its log has one cadence).
static bool log_only(const std::string& key) { return key == "eval-every"; }
// "--seed (1337 then, 42 now), --student-steps (2000 then, 500 now)": what makes two records differ.
static std::string record_difference(const Record& then, const Record& now, bool finished) {
    std::string diff;
    auto add = [&](const std::string& k, const std::string& a, const std::string& b) {
        diff += (diff.empty() ? "" : ", ") + (k == "format" || k == "model" || k == "data" || k == "teacher" ? k : "--" + k) +
                " (" + (a.empty() ? "none" : a) + " then, " + (b.empty() ? "none" : b) + " now)";
    };
    for (const auto& kv : now)
        if (record_value(then, kv.first) != kv.second && !(finished && log_only(kv.first)))
            add(kv.first, record_value(then, kv.first), kv.second);
    for (const auto& kv : then)
        if (record_value(now, kv.first).empty() && !kv.second.empty()) add(kv.first, kv.second, "");
    return diff;
}

// One training run: its name, optimizer settings, length, checkpoint interval and record.
struct RunSpec {
    std::string name;  // "teacher" or "student"
    TrainOptions opt;
    AdamW adam;
    int steps = 2000;
    int eval_every = 500;
    int ckpt_every = 500;  // 0: the checkpoint is written only at the end
    long nan_at = 0;       // test hook (FBI_INJECT_NAN): poison a parameter before this 1-based step
    Record record;
};

static RunSpec run_spec(const Settings& s, bool teacher, const Config& cfg, const std::string& text,
                        const std::string& teacher_record = "") {
    RunSpec r;
    r.name = teacher ? "teacher" : "student";
    r.steps = teacher ? s.teacher_steps : s.student_steps;
    r.opt.B = s.batch, r.opt.T = s.context, r.opt.seed = s.seed;
    r.opt.loss = teacher ? Loss::CE : loss_from_name(s.student_loss);
    if (!teacher && s.student_loss == "dad") r.opt.loss = dad_loss_id(dad_weight_from_name(s.dad_weight));  // db.hpp
    r.opt.schedule.peak = teacher ? s.lr : s.student_lr;
    // The student's cosine goes to zero (not to --lr-min): at a floor of 1e-4 its signs still flip at ~8e-4 of the
    // weights per step at the end, and annealing them away gave −0.009 … −0.017 nats at 4 of 4 seeds (README).
    r.opt.schedule.floor = teacher ? s.lr_min : s.student_lr_min;
    r.opt.schedule.warmup = s.warmup, r.opt.schedule.total = r.steps;
    r.adam.weight_decay = s.wd;
    r.adam.decay_on = s.decay == "all" ? DecayOn::All : DecayOn::Matrices;
    r.eval_every = s.eval_every, r.ckpt_every = s.ckpt_every;
    if (!s.inject_nan.empty()) {
        size_t colon = s.inject_nan.find(':');
        std::string run = s.inject_nan.substr(0, colon);
        long at = colon == std::string::npos ? 0 : std::atol(s.inject_nan.c_str() + colon + 1);
        if ((run != "teacher" && run != "student") || at < 1)
            throw std::invalid_argument("FBI_INJECT_NAN expects teacher:STEP or student:STEP, got '" + s.inject_nan + "'");
        if (run == r.name) r.nan_at = at;
    }
    char data[40];
    std::snprintf(data, sizeof data, "%zu chars, fnv1a %016llx", text.size(),
                  (unsigned long long)fnv1a((const unsigned char*)text.data(), text.size()));
    std::string pre = teacher ? "" : "student-";
    r.record = {{"format", "train_tiny run 1"}, {"model", describe(cfg)}, {"data", data},
                {r.name + "-steps", std::to_string(r.steps)}, {"batch", std::to_string(r.opt.B)},
                {pre + "lr", g17(r.opt.schedule.peak)}, {pre + "lr-min", g17(r.opt.schedule.floor)},
                {"warmup", std::to_string(s.warmup)}, {"seed", std::to_string(s.seed)}, {"wd", g17(s.wd)},
                {"decay", s.decay}, {"eval-every", std::to_string(s.eval_every)}};
    if (!teacher) {
        r.record.push_back({"student-loss", s.student_loss == "dad" ? "dad " + s.dad_weight : s.student_loss});
        r.record.push_back({"student-init", s.student_init});
        if (r.opt.loss != Loss::CE || s.student_init == "teacher") {  // the teacher's result decides this run too
            char h[24];
            std::snprintf(h, sizeof h, "%016llx", (unsigned long long)fnv1a((const unsigned char*)teacher_record.data(),
                                                                             teacher_record.size()));
            r.record.push_back({"teacher", h});
        }
    }
    return r;
}

// Where a run starts: from step 0, from its checkpoint (unfinished), or not at all (finished: reuse it).
struct Start {
    enum Kind { Fresh, Resume, Finished } kind = Fresh;
    Checkpoint ck;
};
static bool file_exists(const std::string& path) { struct stat st; return stat(path.c_str(), &st) == 0; }
static std::string read_text(const std::string& path) {
    std::vector<unsigned char> b;
    try { b = read_file_bytes(path); } catch (const std::exception&) { return ""; }  // no record: not resumable
    return std::string(b.begin(), b.end());
}
static Start find_start(const RunSpec& spec, const std::string& ckpt, const Config& cfg, const std::string& vocab,
                        bool fresh) {
    Start st;
    if (!file_exists(ckpt)) return st;
    const char* who = spec.name.c_str();
    std::string text = read_text(ckpt + ".meta");
    if (text.empty()) {
        std::printf("%s: starting afresh: %s has no record of the command that wrote it (%s.meta)\n", who, ckpt.c_str(),
                    ckpt.c_str());
        return st;
    }
    Checkpoint ck;
    try {
        ck = load_checkpoint(ckpt);
    } catch (const std::exception& e) {
        std::printf("%s: starting afresh: %s\n", who, e.what());
        return st;
    }
    Record then = parse_record(text);
    long then_steps = std::atol(record_value(then, spec.name + "-steps").c_str());
    bool unfinished = ck.step < then_steps;
    std::string diff = record_value(then, "format").empty() ? "its record is from an older train_tiny"
                                                            : record_difference(then, spec.record, !unfinished);
    if (!diff.empty() && unfinished && !fresh)
        throw std::runtime_error(ckpt + " holds an unfinished " + spec.name + " run (step " + std::to_string(ck.step) + "/" +
                                 std::to_string(then_steps) + ") of a different command: " + diff +
                                 ". Run that command again to continue it, or add --fresh to start this one over "
                                 "(its first checkpoint replaces that one)");
    if (!diff.empty()) {
        std::printf("%s: %s: %s is %s run of a different command: %s\n", who,
                    unfinished ? "--fresh: starting over" : "starting afresh", ckpt.c_str(),
                    unfinished ? "an unfinished" : "a finished", diff.c_str());
        return st;
    }
    if (!(ck.cfg == cfg) || ck.vocab != vocab) {
        std::printf("%s: starting afresh: %s has another config or vocabulary than its record says\n", who, ckpt.c_str());
        return st;
    }
    if (ck.step == spec.steps && !(fresh && spec.name == "student")) {
        st.kind = Start::Finished;
    } else if (fresh) {
        std::printf("%s: --fresh: starting over (%s, step %ld, is replaced at the first checkpoint)\n", who, ckpt.c_str(),
                    ck.step);
        return st;
    } else if (ck.step > 0 && ck.step < spec.steps && ck.opt.m.size() == ck.params.size()) {
        st.kind = Start::Resume;
    } else {
        std::printf("%s: starting afresh: %s (step %ld) has no optimizer state to continue from\n", who, ckpt.c_str(), ck.step);
        return st;
    }
    st.ck = std::move(ck);
    return st;
}

// A run's checkpoint and its record. A new run removes the old record just before its first checkpoint replaces
// the old one, and writes its own record right after: a record always describes the checkpoint beside it.
struct RunFiles {
    std::string ckpt, meta, record;
    bool recorded = false;  // true once this run's record is on disk (at once when resuming or reusing)
    void save(const Checkpoint& ck, const TestKill& kill, const std::string& run) {
        if (!recorded) std::remove(meta.c_str());
        kill.write(ckpt, checkpoint_bytes(ck), run, ck.step);
        if (!recorded) {
            if (kill.at(run, "meta", ck.step)) raise(SIGKILL);
            write_file_atomic(meta, std::vector<unsigned char>(record.begin(), record.end()));
            recorded = true;
        }
    }
};
static RunFiles run_files(const std::string& ckpt, const RunSpec& spec) {
    return {ckpt, ckpt + ".meta", record_text(spec.record)};
}

// Thrown when a signal stopped a run at the end of a step (its checkpoint written); main exits with 128 + signal.
struct Interrupted { int signal; };

// ---- the training loop both runs share ------------------------------------------------------------------------
// Train `model` from step `start` to spec.steps, printing progress lines and writing one CSV row per step. Every
// spec.ckpt_every steps the checkpoint is replaced atomically (parameters and optimizer state); Ctrl-C stops at the
// end of a step and writes one too. NaN/inf in the loss or gradients (fbi::NonFiniteError, thrown before the
// update) stops the run with a message that names the step and the last good checkpoint, left as it was.
static std::string kept_checkpoint(const RunSpec& spec, long saved, const std::string& ckpt_path) {
    if (saved > 0)
        return "last good checkpoint: " + ckpt_path + " (after step " + std::to_string(saved) +
               "; parameters and optimizer state), left as it was";
    if (spec.ckpt_every > 0)
        return "no checkpoint of this run was written: the first was due after step " + std::to_string(spec.ckpt_every) +
               " (--ckpt-every); " + ckpt_path + " was not touched";
    return "no checkpoint was written (--ckpt-every 0: only at the end); " + ckpt_path + " was not touched";
}
static void train(Model& model, Model* teacher, const Data& d, const RunSpec& spec, const std::string& csv_path,
                  RunFiles& files, const TestKill& kill, AdamW adam, long start) {
    CsvLog log(csv_path, start);
    FlipCounter flips;
    std::vector<const float*> ptrs;
    std::vector<size_t> sizes;
    latent_weights(model, ptrs, sizes);
    flips.update(ptrs, sizes);  // record the signs the next step starts from
    double t0 = now_seconds(), t_last = t0;
    long tokens_per_step = long(spec.opt.B) * spec.opt.T * spec.opt.micro_batches;
    long saved = start;  // the step of the newest checkpoint of this run (0: none yet)
    stop_deferred = 1;   // Ctrl-C now stops at the end of a step
    for (long step = start; step < spec.steps; step++) {
        if (step + 1 == spec.nan_at) model.p(model.lm_head)[0] = std::numeric_limits<float>::quiet_NaN();
        StepStats st;
        try {
            st = train_step(model, teacher, adam, flips, d.train, spec.opt, step);
        } catch (const NonFiniteError& e) {
            throw std::runtime_error(spec.name + " stopped at step " + std::to_string(step + 1) + "/" +
                                     std::to_string(spec.steps) + ": " + e.what() + "\n       " +
                                     kept_checkpoint(spec, saved, files.ckpt));
        }
        double now = now_seconds();
        double tok_s = tokens_per_step / std::max(1e-9, now - t_last);
        t_last = now;
        double val = -1;
        bool last = step + 1 == spec.steps;
        if ((spec.eval_every > 0 && (step + 1) % spec.eval_every == 0) || last)
            val = evaluate(model, d.val, spec.opt.B, spec.opt.T, 200);
        log.row(step + 1, st, tok_s, val);
        kill.after_step(spec.name, step + 1);
        bool due = spec.ckpt_every > 0 && (step + 1) % spec.ckpt_every == 0;
        if (!last && (due || stop_requested)) {  // the last one: the caller saves it
            log.sync();  // the log holds every step the checkpoint holds
            files.save(make_checkpoint(model, d.vocab, step + 1, &adam), kill, spec.name);
            saved = step + 1;
        }
        if ((step + 1) % 100 == 0 || step == start || last || stop_requested) {
            double elapsed = now - t0, avg = tokens_per_step * (step + 1 - start) / elapsed;
            std::printf("%-7s step %5ld/%d | loss %.4f | lr %.2e | grad %.3f | flips %.5f | %6.0f tok/s | ETA %s",
                        spec.name.c_str(), step + 1, spec.steps, st.loss, st.lr, st.grad_norm, st.flip_ratio, avg,
                        fmt_duration(elapsed / (step + 1 - start) * (spec.steps - step - 1)).c_str());
            if (val >= 0) std::printf(" | val %.4f", val);
            std::printf("\n");
            std::fflush(stdout);
        }
        if (stop_requested && !last) {
            std::printf("%s: interrupted after step %ld/%d; %s holds it (with optimizer state).\n"
                        "Run the same command again to continue from step %ld.\n",
                        spec.name.c_str(), step + 1, spec.steps, files.ckpt.c_str(), step + 1);
            throw Interrupted{int(stop_requested)};
        }
    }
    log.sync();  // (a signal during the last step is handled after the caller's final save)
}

// Start a run (teacher or student) as find_start decided: resume its checkpoint, or train it from `model`.
// The final checkpoint (without optimizer state) replaces the periodic one.
static double run_or_resume(Model& model, Model* teacher, const Data& d, const RunSpec& spec, const std::string& base,
                            const Start& start, const Settings& s) {
    RunFiles files = run_files(base + ".ckpt", spec);
    AdamW adam = spec.adam;
    long from = 0;
    if (start.kind == Start::Resume) {
        model.params = start.ck.params;
        adam.m = start.ck.opt.m, adam.v = start.ck.opt.v, adam.t = start.ck.opt.t;
        from = start.ck.step;
        files.recorded = true;
        std::printf("%s: resuming at step %ld/%d from %s (same command; its optimizer state and batches)\n",
                    spec.name.c_str(), from, spec.steps, files.ckpt.c_str());
    }
    double t0 = now_seconds();
    train(model, teacher, d, spec, base + ".csv", files, s.kill, adam, from);
    double seconds = now_seconds() - t0;
    files.save(make_checkpoint(model, d.vocab, spec.steps, nullptr), s.kill, spec.name);
    stop_deferred = 0;  // from here on a Ctrl-C quits at once: there is nothing that a re-run could not redo
    if (stop_requested) {
        std::printf("%s: finished and saved in %s; interrupted before what follows. Run the same command again to "
                    "continue.\n", spec.name.c_str(), files.ckpt.c_str());
        throw Interrupted{int(stop_requested)};
    }
    return seconds;
}

// ---- 1. the teacher ---------------------------------------------------------------------------------------------
struct TeacherRun {
    Model model;
    std::string ckpt;
    bool reused = false;
    double seconds = 0;
};
static std::string teacher_base(const Settings& s, const RunSpec& spec) {
    return s.out + "/" + (spec.steps != 2000 ? "teacher_s" + std::to_string(spec.steps) : "teacher");
}
static TeacherRun teacher_run(const Settings& s, const Data& d, const Config& cfg, const RunSpec& spec, const Start& start) {
    TeacherRun t;
    std::string base = teacher_base(s, spec);
    t.ckpt = base + ".ckpt";
    if (start.kind == Start::Finished) {
        t.model = model_from_checkpoint(start.ck);
        t.reused = true;
        std::printf("teacher: reusing %s (finished: same config, data and recipe)\n", t.ckpt.c_str());
        return t;
    }
    t.model = build_model<float>(cfg, spec.opt.seed);
    if (start.kind == Start::Fresh)
        std::printf("teacher: %s, %zu parameters, %d steps\n", describe(cfg).c_str(), t.model.params.size(), spec.steps);
    t.seconds = run_or_resume(t.model, nullptr, d, spec, base, start, s);
    return t;
}

// ---- 2. the student: 1-bit block linears, from random init (or the teacher's weights) ---------------------------
static std::string student_tag(const Settings& s) {
    return (s.student_quant == Quant::FBI ? "" : std::string(quant_name(s.student_quant)) + "_") + s.student_loss +
           "_" + s.student_init;
}
static Model student_run(const Settings& s, const Data& d, const Config& cfg, const RunSpec& spec, const Start& start,
                         Model& teacher, double& seconds) {
    std::string base = s.out + "/student_" + student_tag(s);
    if (start.kind == Start::Finished) {
        std::printf("student: reusing %s (finished earlier by the same command; --fresh trains it again)\n",
                    (base + ".ckpt").c_str());
        return model_from_checkpoint(start.ck);
    }
    Model student = build_model<float>(cfg, spec.opt.seed + 1);
    if (start.kind == Start::Fresh && s.student_init == "teacher") {
        int n = copy_shared_params(student, teacher);
        std::printf("student: initialised from the teacher (%d tensors copied; scales from [F4] / [Q4])\n", n);
    }
    if (start.kind == Start::Fresh)
        std::printf("student: %s, loss %s%s, init %s, %zu parameters, %d steps\n", describe(cfg).c_str(),
                    loss_name(spec.opt.loss), s.student_loss == "dad" ? (" (" + s.dad_weight + " weights)").c_str() : "",
                    s.student_init.c_str(), student.params.size(), spec.steps);
    seconds = run_or_resume(student, spec.opt.loss == Loss::CE ? nullptr : &teacher, d, spec, base, start, s);
    return student;
}

// ---- 3. evaluate on the whole validation split; pack the student to 1 bit and evaluate that too --------------
struct Results {
    double teacher_ce = 0, student_ce = 0, packed_ce = 0, decoder_ce = 0;  // nats per character
    bool packs = false;                 // a full-precision student has no packed form
    PackedModel packed;
    std::string packed_path;
    double packed_bits = 32, file_bytes = 0;
    double tok_s[3] = {0, 0, 0};        // decode tokens/s: teacher, float student, packed student
    std::string samples[3];
};
static Results evaluate_pack_sample(const Settings& s, const Data& d, Model& teacher, Model& student) {
    Results r;
    const int T = s.context, ew = s.eval_windows;  // ew = 0: every window of the validation split
    r.teacher_ce = evaluate(teacher, d.val, s.batch, T, ew), r.student_ce = evaluate(student, d.val, s.batch, T, ew);
    r.packs = student.cfg.quant != Quant::FP;
    r.file_bytes = 4.0 * student.params.size();  // fp32 parameter bytes when there is no packed file
    if (r.packs) {
        r.packed_path = s.out + "/student_" + student_tag(s) + ".fbipack";
        PackedModel pm = pack_model(student, d.vocab, s.scale_bits);
        set_row_formats(pm, s.emb_format, s.head_format);  // [H1], [H2]
        s.kill.write(r.packed_path, packed_model_bytes(pm), "pack", 0);
        r.packed = load_packed_model(r.packed_path);  // evaluate what is on disk
        r.file_bytes = double(read_file_bytes(r.packed_path).size());
        r.packed_bits = packed_bits_per_weight(r.packed);
    }
    // the packed model decodes token by token (KV cache); so does the float student here, so that the
    // difference between the two is only the int8 activation of [P1]
    quantize_all(student);
    r.decoder_ce = evaluate_decoder(decode_view(student), FloatLinear{&student}, student.rope_cos.data(),
                                    student.rope_sin.data(), d.val, T, ew);
    r.packed_ce = !r.packs ? r.decoder_ce
                           : evaluate_decoder(decode_view(r.packed), PackedLinearFn{&r.packed, Kernel::Fast},
                                              r.packed.rope_cos.data(), r.packed.rope_sin.data(), d.val, T, ew);
    std::vector<int> prompt = d.newline();
    for (int which = 0; which < 3; which++) {  // teacher, float student, packed student
        double t1 = now_seconds();
        std::vector<int> ids = which == 0 ? generate(teacher, prompt, s.samples, 0.8, 7)
                             : which == 2 && r.packs ? generate(r.packed, prompt, s.samples, 0.8, 7)
                                                     : generate(student, prompt, s.samples, 0.8, 7);
        r.tok_s[which] = s.samples / std::max(1e-9, now_seconds() - t1);
        r.samples[which] = d.decode(ids);
    }
    return r;
}

static void print_table(const Settings& s, const Data& d, const Results& r, const Model& teacher, const Model& student) {
    std::string q = s.student_quant == Quant::FBI ? "FBI" : quant_name(s.student_quant);
    std::string val = s.eval_windows > 0 ? "validation (" + std::to_string(s.eval_windows) + " windows)"
                                         : "validation split (all windows)";
    auto row = [](const char* name, const char* fmt, double a, double b, double c) {
        std::printf("%-30s ", name), std::printf(fmt, a, b, c), std::printf("\n");
    };
    std::printf("\n%-30s %12s %12s %12s\n", val.c_str(), "FP teacher", (q + " student").c_str(),
                r.packs ? (q + " packed").c_str() : "(no packing)");
    const double k = d.chars_per_val_token;  // subword tokens: per character = per token / k
    if (d.subwords()) {
        row("cross-entropy (nats/token)", "%12.4f %12.4f %12.4f", r.teacher_ce, r.student_ce, r.packed_ce);
        row("perplexity (per token)", "%12.3f %12.3f %12.3f", std::exp(r.teacher_ce), std::exp(r.student_ce), std::exp(r.packed_ce));
    }
    row("cross-entropy (nats/char)", "%12.4f %12.4f %12.4f", r.teacher_ce / k, r.student_ce / k, r.packed_ce / k);
    if (!d.subwords())
        row("perplexity", "%12.3f %12.3f %12.3f", std::exp(r.teacher_ce), std::exp(r.student_ce), std::exp(r.packed_ce));
    row("bits per character", "%12.4f %12.4f %12.4f", r.teacher_ce / k / std::log(2.0), r.student_ce / k / std::log(2.0),
        r.packed_ce / k / std::log(2.0));
    row("parameter bytes", "%12.0f %12.0f %12.0f", 4.0 * teacher.params.size(), 4.0 * student.params.size(), r.file_bytes);
    std::printf("%-30s %12s %12s %12.3f\n", "bits per quantized weight", "32", "32 (latent)", r.packed_bits);
    if (r.packs)
        std::printf("%-30s %12s %12s %12s\n", "embedding, LM head", "fp32", "fp32",
                    (std::string(row_format_name(s.emb_format)) + ", " + row_format_name(s.head_format)).c_str());
    if (r.packs && s.scale_bits < 32)
        std::printf("%-30s %12s %12s %12s\n", "packed α, β", "", "fp32", (std::to_string(1 << s.scale_bits) + " levels").c_str());
    row("decode tokens/s (KV cache)", "%12.0f %12.0f %12.0f", r.tok_s[0], r.tok_s[1], r.tok_s[2]);
    std::printf("student - teacher CE: %+.4f   packed - float student CE (decoder path): %+.4f\n",
                r.student_ce - r.teacher_ce, r.packed_ce - r.decoder_ce);
}

// ---- 4. the machine-readable summary (notebook 02 and make compare read it) --------------------------------
static void write_summary(const Settings& s, const Data& d, const Results& r, const TeacherRun& t, const Model& student,
                          const RunSpec& ts, const RunSpec& ss, double student_seconds) {
    using Json = JsonObj<10>;
    auto schedule = [](const RunSpec& run) {
        return Json().put("peak", run.opt.schedule.peak).put("floor", run.opt.schedule.floor).put("warmup", run.opt.schedule.warmup);
    };
    std::string tag = student_tag(s);
    Json j;
    j.text("tag", tag).text("student_quant", quant_name(s.student_quant)).text("student_loss", s.student_loss);
    j.text("student_init", s.student_init).text("teacher_config", describe(t.model.cfg)).text("student_config", describe(student.cfg));
    j.put("teacher_steps", ts.steps).put("student_steps", ss.steps);
    j.put("teacher_val_ce", r.teacher_ce).put("student_val_ce", r.student_ce);
    j.put("teacher_ppl", std::exp(r.teacher_ce)).put("student_ppl", std::exp(r.student_ce));
    const double k = d.chars_per_val_token;  // the losses above are per token: per character for the char model
    j.text("tokenizer", d.subwords() ? "subword (" + std::to_string(d.V) + " pieces)" : "char").put("val_chars_per_token", k);
    j.put("teacher_val_ce_per_char", r.teacher_ce / k).put("student_val_ce_per_char", r.student_ce / k);
    j.put("teacher_bpc", r.teacher_ce / k / std::log(2.0)).put("student_bpc", r.student_ce / k / std::log(2.0));
    j.put("teacher_bytes_fp32", 4.0 * t.model.params.size()).put("student_bytes_packed", r.file_bytes);
    j.put("teacher_train_seconds", t.seconds).put("student_train_seconds", student_seconds);
    j.put("student_packed_val_ce", r.packed_ce).put("student_decoder_val_ce", r.decoder_ce);
    j.put("packed_file_bytes", r.file_bytes).put("packed_bits_per_weight", r.packed_bits).put("packed_scale_bits", s.scale_bits);
    j.text("packed_emb_format", row_format_name(s.emb_format)).text("packed_head_format", row_format_name(s.head_format));
    j.put("decode_tokens_per_s", Json().put("teacher", r.tok_s[0]).put("student_float", r.tok_s[1]).put("student_packed", r.tok_s[2]));
    j.put("threads", num_threads()).put("teacher_schedule", schedule(ts)).put("student_schedule", schedule(ss));
    j.text("teacher_checkpoint", t.ckpt).text("student_checkpoint", s.out + "/student_" + tag + ".ckpt");
    j.text("packed_file", r.packed_path).text("teacher_sample", r.samples[0]).text("student_sample", r.samples[2]);
    std::string json = j.str() + "\n";
    s.kill.write(s.out + "/summary_" + tag + ".json", std::vector<unsigned char>(json.begin(), json.end()), "summary", 0);
}

// ---- memory: refuse a config that cannot fit, with the figure and the flags to change --------------------------
static void check_memory(const Settings& s, const Config& teacher, const Config& student) {
    double need = std::max(training_bytes(teacher, nullptr, s.batch, s.context),   // 1. the teacher trains alone
                           training_bytes(student, &teacher, s.batch, s.context));  // 2. the student, teacher beside it
    double have = machine_memory_bytes();
    if (have <= 0 || need <= have) return;
    ModelFloats f = model_floats(student, s.batch, s.context);
    bool batch_bound = f.activations > f.params + f.weights;
    throw std::invalid_argument(
        "this run needs about " + fmt_bytes(need) + " of memory (" + fmt_bytes(4 * f.activations) +
        " of activations for --batch " + std::to_string(s.batch) + " × --context " + std::to_string(s.context) + ", " +
        fmt_bytes(4 * f.params) + " of student parameters), more than this machine's " + fmt_bytes(have) + ": lower " +
        (batch_bound ? "--batch or --context" : "--width or --layers"));
}

int main(int argc, char** argv) try {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress reaches a log file line by line, even if we are killed
    Settings s = parse_settings(argc, argv);
    std::printf("fbi_llm train_tiny | %s\n", threading_summary().c_str());
    Data d = load_data(s);
    Config teacher_cfg = model_config(s, d.V, Quant::FP), student_cfg = model_config(s, d.V, s.student_quant);
    check_memory(s, teacher_cfg, student_cfg);
    RunSpec tspec = run_spec(s, true, teacher_cfg, d.text);
    Record teacher_result;  // what decides the teacher's checkpoint (not its log)
    for (const auto& kv : tspec.record)
        if (!log_only(kv.first)) teacher_result.push_back(kv);
    RunSpec sspec = run_spec(s, false, student_cfg, d.text, record_text(teacher_result));
    // the output directory is created only now that the settings and data are good, and probed for writability
    // before any training, so that a bad --out costs seconds, not the run
    make_dirs(s.out);
    check_writable_dir(s.out);
    lock_output_dir(s.out);
    remove_stale_partial_writes(s.out);
    // where both runs start (from step 0, resumed, or reused), decided before either trains: a refused student
    // must not cost a teacher run
    Start tstart = find_start(tspec, teacher_base(s, tspec) + ".ckpt", teacher_cfg, d.vocab, s.fresh);
    Start sstart = find_start(sspec, s.out + "/student_" + student_tag(s) + ".ckpt", student_cfg, d.vocab, s.fresh);
    install_stop_handlers();
    double t_start = now_seconds();

    TeacherRun teacher = teacher_run(s, d, teacher_cfg, tspec, tstart);                          // 1.
    double student_seconds = -1;  // stays -1 when a finished student is reused
    Model student = student_run(s, d, student_cfg, sspec, sstart, teacher.model, student_seconds);  // 2.
    Results r = evaluate_pack_sample(s, d, teacher.model, student);                     // 3.
    print_table(s, d, r, teacher.model, student);
    std::printf("train time: teacher %s, student %s\n", teacher.reused ? "(reused)" : fmt_duration(teacher.seconds).c_str(),
                student_seconds < 0 ? "(reused)" : fmt_duration(student_seconds).c_str());
    std::string q = s.student_quant == Quant::FBI ? "FBI" : quant_name(s.student_quant);
    std::printf("\n---- teacher sample (temperature 0.8) ----%s\n", r.samples[0].c_str());
    std::printf("\n---- %s student sample (temperature 0.8) ----%s\n", r.packs ? ("packed " + q).c_str() : "fp32",
                r.samples[2].c_str());
    write_summary(s, d, r, teacher, student, tspec, sspec, std::max(0.0, student_seconds));  // 4.

    std::string tag = student_tag(s), tname = teacher.ckpt.substr(s.out.size() + 1);
    std::printf("\nwrote %s/{%s, student_%s.ckpt, %sstudent_%s.csv, summary_%s.json}  (total %s)\n", s.out.c_str(),
                tname.c_str(), tag.c_str(), r.packs ? ("student_" + tag + ".fbipack, ").c_str() : "", tag.c_str(),
                tag.c_str(), fmt_duration(now_seconds() - t_start).c_str());
    return 0;
} catch (const Interrupted& stop) {
    return 128 + stop.signal;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
