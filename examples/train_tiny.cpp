// train_tiny: the whole FBI-LLM recipe on TinyShakespeare, small enough for a laptop.
//   1. train a full-precision teacher (or reuse OUT/teacher.ckpt when its config, data and recipe match)
//   2. train a 1-bit FBI student FROM RANDOM INIT with autoregressive distillation against the frozen teacher
//   3. evaluate both on the validation split, print a side-by-side table, sample text from both,
//      save checkpoints, a CSV log per run and a JSON summary.
// Ablations (the FBI-LLM paper's two questions, [D0]/[D1] and [F4]):   --student-loss ce      (no teacher)
//                                                       --student-init teacher (start from the teacher's weights)
// Other students (b1.58 [Q1]–[Q3], DB [Q4]–[Q6], DAD [D3]):  --student-quant b1.58 | db | fp32,  --student-loss dad (make compare runs them all)
#include "common.hpp"

using namespace fbi;
using namespace example;

static const char* kUsage =
    "usage: train_tiny --data PATH [--out DIR] [options]\n"
    "  --teacher-steps 2000  --student-steps 2000  --batch 12  --context 64  --seed 1337\n"
    "  --width 128 --layers 4 --heads 4         the student (and teacher) shape\n"
    "  --teacher-width W --teacher-layers L      a bigger teacher (default: same shape as the student)\n"
    "  --lr 1e-3 --lr-min 1e-4 --warmup 100      schedule ([O3]): --lr and --warmup of both runs, --lr-min the\n"
    "                                            teacher's floor; --teacher-lr, --teacher-lr-min, --student-lr one run's\n"
    "  --student-lr-min 0                        the student's floor: its cosine decays to zero (1-bit signs keep\n"
    "                                            flipping at 1e-4; README, \"The student's learning-rate floor\")\n"
    "  --student-loss ad|ce|mix|dad              AD = distillation (FBI-LLM), ce = no teacher, mix = 0.5/0.5,\n"
    "                                            dad = DB-LLM's weighted distillation (--dad-weight entropy|disagreement|uniform)\n"
    "  --student-quant fbi|b1.58|db|fp32         the student's block linears ([F2], [Q1], [Q5]; fp32 = none)\n"
    "  --student-init random|teacher             from scratch (FBI-LLM) or from the teacher's weights\n"
    "  --decay matrices|all  --wd 0.1            AdamW weight decay on 2-D weights only, or on everything\n"
    "  --beta2 0.95                              AdamW β2 ([O1])\n"
    "  --student-wd W --student-decay D          the student's own weight decay settings\n"
    "  --tag NAME                                names the student's files (default: <loss>_<init>)\n"
    "  --scale-bits 32                           packed file: α, β as fp32 (32, exact) or 2^N-level codebooks (1..8)\n"
    "  --eval-every 500 --samples 300            progress evaluation interval, sample length\n"
    "  --eval-windows 0                          final evaluation on this many evenly spaced windows (0 = all)\n"
    "  --ckpt-every N                            save each run's checkpoint (with optimizer state) every N steps,\n"
    "                                            atomically; default: --eval-every. 0 = only at the end\n"
    "  --inject-nan-at RUN:STEP                  TEST HOOK: make RUN (teacher or student) hit a NaN loss at STEP,\n"
    "                                            to check that training stops and keeps the last good checkpoint";

struct RunSpec {
    std::string name;  // "teacher" or "student"
    TrainOptions opt;
    AdamW adam;
    int steps = 2000;
    int eval_every = 500;
    int ckpt_every = 500;  // 0: the checkpoint is written only at the end (by main)
    long nan_at = 0;       // test hook (--inject-nan-at): poison a parameter before this 1-based step
};

// Train `model` for spec.steps, printing progress lines and writing one CSV row per step. Every
// spec.ckpt_every steps the checkpoint at ckpt_path is replaced atomically (parameters and optimizer state).
// `stale_on_save` (teacher.ckpt.meta) describes the checkpoint there before; it is removed just before that
// checkpoint is first replaced. NaN/inf in the loss or gradients (fbi::NonFiniteError, thrown before the
// update) stops the run with a message that names the step and the last good checkpoint, left as it was.
static void train(Model& model, Model* teacher, const std::vector<int>& train_data, const std::vector<int>& val_data,
                  const RunSpec& spec, const std::string& csv_path, const std::string& ckpt_path,
                  const std::string& vocab, const std::string& stale_on_save = "") {
    CsvLog log(csv_path);
    AdamW adam = spec.adam;
    FlipCounter flips;
    std::vector<const float*> ptrs;
    std::vector<size_t> sizes;
    latent_weights(model, ptrs, sizes);
    flips.update(ptrs, sizes);  // record the initial signs
    double t0 = now_seconds(), t_last = t0;
    long tokens_per_step = long(spec.opt.B) * spec.opt.T * spec.opt.micro_batches;
    long saved = 0;  // the step of the last checkpoint this run wrote (0: none yet)
    for (long step = 0; step < spec.steps; step++) {
        if (step + 1 == spec.nan_at) model.p(model.lm_head)[0] = std::numeric_limits<float>::quiet_NaN();
        StepStats st;
        try {
            st = train_step(model, teacher, adam, flips, train_data, spec.opt, step);
        } catch (const NonFiniteError& e) {
            std::string kept =
                saved > 0 ? "last good checkpoint: " + ckpt_path + " (after step " + std::to_string(saved) +
                                "; parameters and optimizer state), left as it was"
                : spec.ckpt_every > 0 ? "no checkpoint of this run was written: the first was due after step " +
                                            std::to_string(spec.ckpt_every) + " (--ckpt-every); " + ckpt_path +
                                            " was not touched"
                                      : "no checkpoint was written (--ckpt-every 0: only at the end); " + ckpt_path +
                                            " was not touched";
            throw std::runtime_error(spec.name + " stopped at step " + std::to_string(step + 1) + "/" +
                                     std::to_string(spec.steps) + ": " + e.what() + "\n       " + kept);
        }
        double now = now_seconds();
        double tok_s = tokens_per_step / std::max(1e-9, now - t_last);
        t_last = now;
        double val = -1;
        bool last = step + 1 == spec.steps;
        if ((spec.eval_every > 0 && (step + 1) % spec.eval_every == 0) || last)
            val = evaluate(model, val_data, spec.opt.B, spec.opt.T, 200);
        log.row(step + 1, st, tok_s, val);
        if (spec.ckpt_every > 0 && (step + 1) % spec.ckpt_every == 0 && !last) {  // the last one: main saves it
            if (saved == 0 && !stale_on_save.empty()) std::remove(stale_on_save.c_str());
            save_checkpoint(ckpt_path, make_checkpoint(model, vocab, step + 1, &adam));
            saved = step + 1;
        }
        if ((step + 1) % 100 == 0 || step == 0 || last) {
            double elapsed = now - t0, avg = tokens_per_step * (step + 1) / elapsed;
            std::printf("%-7s step %5ld/%d | loss %.4f | lr %.2e | grad %.3f | flips %.5f | %6.0f tok/s | ETA %s",
                        spec.name.c_str(), step + 1, spec.steps, st.loss, st.lr, st.grad_norm, st.flip_ratio, avg,
                        fmt_duration(elapsed / (step + 1) * (spec.steps - step - 1)).c_str());
            if (val >= 0) std::printf(" | val %.4f", val);
            std::printf("\n");
            std::fflush(stdout);
        }
    }
}

// The teacher is reused when this fingerprint of its recipe and data matches the one saved next to it.
static std::string fingerprint(const Config& c, const std::string& text, const RunSpec& s) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%s|data=%016llx|steps=%d|B=%d|lr=%g,%g,%d|seed=%llu|wd=%g|decay=%d|b2=%g|v3",
                  describe(c).c_str(), (unsigned long long)fnv1a((const unsigned char*)text.data(), text.size()),
                  s.steps, s.opt.B, s.opt.schedule.peak, s.opt.schedule.floor, s.opt.schedule.warmup,
                  (unsigned long long)s.opt.seed, s.adam.weight_decay, int(s.adam.decay_on), s.adam.beta2);
    return buf;
}
static std::string read_text(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Parameter bytes in training form: fp32 everywhere (the packed form's bytes are its file size).
static double fp32_bytes(const Model& m) { return 4.0 * m.params.size(); }
int main(int argc, char** argv) try {
    Args args(argc, argv, kUsage);
    std::string data_path = args.str("data", ""), out = args.str("out", "runs/tiny");
    if (data_path.empty()) throw std::invalid_argument("--data PATH is required (make train-tiny passes it)");
    std::printf("fbi_llm train_tiny | %s\n", threading_summary().c_str());

    // ---- data ----  (checked before anything is created on disk)
    int T = args.integer("context", 64), B = args.integer("batch", 12);
    if (T < 1 || B < 1) throw std::invalid_argument("--context and --batch must be at least 1");
    std::string text = load_corpus(data_path, 2 * (T + 1) * 10, T);
    CharTokenizer tok = CharTokenizer::from_text(text);
    std::vector<int> all = tok.encode(text), train_data, val_data;
    split_90_10(all, train_data, val_data);
    std::printf("data: %zu characters, vocabulary %d, train %zu / val %zu tokens\n", text.size(), tok.size(),
                train_data.size(), val_data.size());

    // ---- configs and recipes ----
    Config student_cfg;
    student_cfg.V = tok.size();
    student_cfg.C = args.integer("width", 128);
    student_cfg.L = args.integer("layers", 4);
    student_cfg.NH = args.integer("heads", 4);
    student_cfg.F = swiglu_width(student_cfg.C);
    student_cfg.T = T;
    student_cfg.quant = quant_from_name(args.str("student-quant", "fbi"));
    Config teacher_cfg = student_cfg;
    teacher_cfg.quant = Quant::FP;
    teacher_cfg.C = args.integer("teacher-width", student_cfg.C);
    teacher_cfg.L = args.integer("teacher-layers", student_cfg.L);
    teacher_cfg.F = swiglu_width(teacher_cfg.C);
    check_config(student_cfg);
    check_config(teacher_cfg);
    const int scale_bits = args.integer("scale-bits", 32);  // checked now, not after two training runs
    if (!valid_scale_bits(scale_bits))
        throw std::invalid_argument("--scale-bits must be 32 (fp32 scales) or 1..8 (codebook), not " +
                                    std::to_string(scale_bits));

    RunSpec base;
    base.opt.B = B;
    base.opt.T = T;
    base.opt.seed = uint64_t(args.num("seed", 1337));
    base.opt.schedule.peak = args.num("lr", 1e-3);
    base.opt.schedule.floor = args.num("lr-min", 1e-4);
    base.opt.schedule.warmup = args.integer("warmup", 100);
    base.adam.weight_decay = args.num("wd", 0.1);
    base.adam.beta2 = args.num("beta2", 0.95);
    std::string decay = args.str("decay", "matrices");
    if (decay != "matrices" && decay != "all") throw std::invalid_argument("--decay must be matrices or all");
    base.adam.decay_on = decay == "all" ? DecayOn::All : DecayOn::Matrices;
    base.eval_every = args.integer("eval-every", 500);
    base.ckpt_every = args.integer("ckpt-every", base.eval_every);
    if (base.ckpt_every < 0) throw std::invalid_argument("--ckpt-every must be 0 (only at the end) or more");

    RunSpec tspec = base;
    tspec.name = "teacher";
    tspec.steps = args.integer("teacher-steps", 2000);
    tspec.opt.loss = Loss::CE;
    tspec.opt.schedule.peak = args.num("teacher-lr", base.opt.schedule.peak);
    tspec.opt.schedule.floor = args.num("teacher-lr-min", base.opt.schedule.floor);
    tspec.opt.schedule.total = tspec.steps;

    RunSpec sspec = base;
    sspec.name = "student";
    sspec.steps = args.integer("student-steps", 2000);
    sspec.opt.schedule.total = sspec.steps;
    sspec.opt.schedule.peak = args.num("student-lr", base.opt.schedule.peak);
    // The student's cosine goes to zero (not to --lr-min): at a floor of 1e-4 its signs still flip at ~8e-4 of the
    // weights per step at the end, and annealing them away gave −0.009 … −0.017 nats at 4 of 4 seeds (README).
    sspec.opt.schedule.floor = args.num("student-lr-min", 0.0);
    sspec.adam.weight_decay = args.num("student-wd", base.adam.weight_decay);
    std::string sdecay = args.str("student-decay", decay);
    if (sdecay != "matrices" && sdecay != "all") throw std::invalid_argument("--student-decay must be matrices or all");
    sspec.adam.decay_on = sdecay == "all" ? DecayOn::All : DecayOn::Matrices;
    std::string loss = args.str("student-loss", "ad"), init = args.str("student-init", "random");
    if (init != "random" && init != "teacher") throw std::invalid_argument("--student-init must be random or teacher");
    sspec.opt.loss = loss_from_name(loss);  // --student-loss ce|ad|mix|dad
    std::string dadw = args.str("dad-weight", "entropy");
    sspec.opt.dad = dad_weight_from_name(dadw);
    std::string qname = quant_name(student_cfg.quant);
    std::string tag = args.str("tag", (student_cfg.quant == Quant::FBI ? "" : qname + "_") + loss + "_" + init);
    std::string tname = teacher_cfg.C == student_cfg.C && teacher_cfg.L == student_cfg.L
                            ? "teacher" : "teacher_C" + std::to_string(teacher_cfg.C) + "_L" + std::to_string(teacher_cfg.L);
    if (tspec.steps != 2000) tname += "_s" + std::to_string(tspec.steps);
    std::string nan_at = args.str("inject-nan-at", "");  // test hook: RUN:STEP
    if (!nan_at.empty()) {
        size_t colon = nan_at.find(':');
        std::string run = nan_at.substr(0, colon);
        long at = colon == std::string::npos ? 0 : std::atol(nan_at.c_str() + colon + 1);
        if ((run != "teacher" && run != "student") || at < 1)
            throw std::invalid_argument("--inject-nan-at expects teacher:STEP or student:STEP, got '" + nan_at + "'");
        (run == "teacher" ? tspec : sspec).nan_at = at;
    }

    // ---- output: created only now that the arguments and data are known to be good; checked for writability
    // before any training, so that a bad --out costs seconds, not the run ----
    make_dirs(out);
    check_writable_dir(out);
    double t_start = now_seconds();

    // ---- 1. the teacher: reuse or train ----
    std::string tckpt = out + "/" + tname + ".ckpt", tmeta = tckpt + ".meta";
    std::string fp = fingerprint(teacher_cfg, text, tspec);
    Model teacher;
    bool reused = false;
    if (read_text(tmeta) == fp) {
        try {
            Checkpoint ck = load_checkpoint(tckpt);
            if (ck.cfg == teacher_cfg && ck.vocab == tok.chars) { teacher = model_from_checkpoint(ck); reused = true; }
        } catch (const std::exception& e) {
            std::printf("teacher checkpoint not reused: %s\n", e.what());
        }
    }
    double t_teacher = 0;
    if (reused) {
        std::printf("teacher: reusing %s (same config, data and recipe)\n", tckpt.c_str());
    } else {
        std::printf("teacher: %s, %zu parameters, %d steps\n", describe(teacher_cfg).c_str(),
                    build_model<float>(teacher_cfg, 0).params.size(), tspec.steps);
        teacher = build_model<float>(teacher_cfg, tspec.opt.seed);
        double t0 = now_seconds();  // .meta goes when teacher.ckpt is first replaced; only a finished run rewrites it
        train(teacher, nullptr, train_data, val_data, tspec, out + "/" + tname + ".csv", tckpt, tok.chars, tmeta);
        std::remove(tmeta.c_str());  // (also with --ckpt-every 0) before the final checkpoint replaces the old one
        t_teacher = now_seconds() - t0;
        save_checkpoint(tckpt, make_checkpoint(teacher, tok.chars, tspec.steps, nullptr));
        write_file_atomic(tmeta, std::vector<unsigned char>(fp.begin(), fp.end()));
    }

    // ---- 2. the student: 1-bit block linears, from random init (or the teacher's weights) ----
    Model student = build_model<float>(student_cfg, sspec.opt.seed + 1);
    if (init == "teacher") {
        if (teacher_cfg.C != student_cfg.C || teacher_cfg.L != student_cfg.L)
            throw std::invalid_argument("--student-init teacher needs a teacher of the student's shape");
        int n = copy_shared_params(student, teacher);
        std::printf("student: initialised from the teacher (%d tensors copied; scales from [F4] / [Q4])\n", n);
    }
    std::printf("student: %s, loss %s%s, init %s, %zu parameters, %d steps\n", describe(student_cfg).c_str(),
                loss_name(sspec.opt.loss), sspec.opt.loss == Loss::DAD ? (" (" + dadw + " weights)").c_str() : "",
                init.c_str(), student.params.size(), sspec.steps);
    double t0 = now_seconds();
    std::string sckpt = out + "/student_" + tag + ".ckpt";
    train(student, sspec.opt.loss == Loss::CE ? nullptr : &teacher, train_data, val_data, sspec,
          out + "/student_" + tag + ".csv", sckpt, tok.chars);
    double t_student = now_seconds() - t0;
    save_checkpoint(sckpt, make_checkpoint(student, tok.chars, sspec.steps, nullptr));

    // ---- 3. evaluate on the whole validation split; pack the student to 1 bit and evaluate that too ----
    long ew = args.integer("eval-windows", 0);  // 0 = every window of the validation split
    double tv = evaluate(teacher, val_data, B, T, ew), sv = evaluate(student, val_data, B, T, ew);
    bool packs = student_cfg.quant != Quant::FP;  // a full-precision student has no packed form
    PackedModel packed;
    std::string ppath = out + "/student_" + tag + ".fbipack";
    double packed_file_bytes = fp32_bytes(student);
    if (packs) {
        save_packed_model(ppath, pack_model(student, tok.chars, scale_bits));
        packed = load_packed_model(ppath);  // evaluate what is on disk
        packed_file_bytes = double(read_file_bytes(ppath).size());
    }
    // the packed model decodes token by token (KV cache); so does the float student here, so that the
    // difference between the two is only the int8 activation of [S7]
    quantize_all(student);
    double sv_dec = evaluate_decoder(decode_view(student), FloatLinear{&student}, student.rope_cos.data(),
                                     student.rope_sin.data(), val_data, T, ew);
    double pv = !packs ? sv_dec
                       : evaluate_decoder(decode_view(packed), PackedLinearFn{&packed, Kernel::Fast},
                                          packed.rope_cos.data(), packed.rope_sin.data(), val_data, T, ew);

    int n_sample = args.integer("samples", 300);
    std::vector<int> prompt = tok.encode("\n");
    double tok_s[3];
    std::string samples[3];
    for (int which = 0; which < 3; which++) {  // teacher, float student, packed student
        double t1 = now_seconds();
        std::vector<int> ids = which == 0 ? generate(teacher, prompt, n_sample, 0.8, 7)
                             : which == 1 ? generate(student, prompt, n_sample, 0.8, 7)
                             : packs      ? generate(packed, prompt, n_sample, 0.8, 7)
                                          : generate(student, prompt, n_sample, 0.8, 7);
        tok_s[which] = n_sample / std::max(1e-9, now_seconds() - t1);
        samples[which] = tok.decode(ids);
    }
    const std::string& s_teacher = samples[0];
    const std::string& s_student = samples[2];

    std::string q_label = student_cfg.quant == Quant::FBI ? "FBI" : qname;
    std::string val_label = ew > 0 ? "validation (" + std::to_string(ew) + " windows)" : "validation split (all windows)";
    std::printf("\n%-30s %12s %12s %12s\n", val_label.c_str(), "FP teacher",
                (q_label + " student").c_str(), packs ? (q_label + " packed").c_str() : "(no packing)");
    std::printf("%-30s %12.4f %12.4f %12.4f\n", "cross-entropy (nats/char)", tv, sv, pv);
    std::printf("%-30s %12.3f %12.3f %12.3f\n", "perplexity", std::exp(tv), std::exp(sv), std::exp(pv));
    std::printf("%-30s %12.4f %12.4f %12.4f\n", "bits per character", tv / std::log(2.0), sv / std::log(2.0),
                pv / std::log(2.0));
    std::printf("%-30s %12.0f %12.0f %12.0f\n", "parameter bytes", fp32_bytes(teacher), fp32_bytes(student),
                packed_file_bytes);
    std::printf("%-30s %12s %12s %12.3f\n", "bits per quantized weight", "32", "32 (latent)",
                packs ? packed_bits_per_weight(packed) : 32.0);
    if (packs && scale_bits < 32)
        std::printf("%-30s %12s %12s %12s\n", "packed α, β", "", "fp32", (std::to_string(1 << scale_bits) + " levels").c_str());
    std::printf("%-30s %12.0f %12.0f %12.0f\n", "decode tokens/s (KV cache)", tok_s[0], tok_s[1], tok_s[2]);
    std::printf("student - teacher CE: %+.4f   packed - float student CE (decoder path): %+.4f\n", sv - tv, pv - sv_dec);
    std::printf("train time: teacher %s, student %s\n", reused ? "(reused)" : fmt_duration(t_teacher).c_str(),
                fmt_duration(t_student).c_str());
    std::printf("\n---- teacher sample (temperature 0.8) ----%s\n", s_teacher.c_str());
    std::printf("\n---- %s student sample (temperature 0.8) ----%s\n", packs ? ("packed " + q_label).c_str() : "fp32",
                s_student.c_str());

    // ---- 4. machine-readable summary ----
    auto json_str = [](const std::string& s) {
        std::string o = "\"";
        for (unsigned char c : s) {
            if (c == '"' || c == '\\') { o += '\\'; o += char(c); }
            else if (c < 32) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); o += b; }
            else o += char(c);
        }
        return o + "\"";
    };
    char buf[4096];
    std::snprintf(buf, sizeof buf,
                  "{\n  \"tag\": %s,\n  \"student_quant\": \"%s\",\n  \"student_loss\": \"%s\",\n  \"student_init\": \"%s\",\n"
                  "  \"teacher_config\": %s,\n  \"student_config\": %s,\n  \"teacher_steps\": %d,\n  \"student_steps\": %d,\n"
                  "  \"teacher_val_ce\": %.6f,\n  \"student_val_ce\": %.6f,\n  \"teacher_ppl\": %.4f,\n  \"student_ppl\": %.4f,\n"
                  "  \"teacher_bpc\": %.5f,\n  \"student_bpc\": %.5f,\n  \"teacher_bytes_fp32\": %.0f,\n"
                  "  \"student_bytes_packed\": %.0f,\n  \"teacher_train_seconds\": %.1f,\n  \"student_train_seconds\": %.1f,\n"
                  "  \"student_packed_val_ce\": %.6f,\n  \"student_decoder_val_ce\": %.6f,\n"
                  "  \"packed_file_bytes\": %.0f,\n  \"packed_bits_per_weight\": %.5f,\n  \"packed_scale_bits\": %d,\n"
                  "  \"decode_tokens_per_s\": {\"teacher\": %.0f, \"student_float\": %.0f, \"student_packed\": %.0f},\n"
                  "  \"threads\": %d,\n",
                  json_str(tag).c_str(), qname.c_str(), loss.c_str(), init.c_str(), json_str(describe(teacher_cfg)).c_str(),
                  json_str(describe(student_cfg)).c_str(), tspec.steps, sspec.steps, tv, sv, std::exp(tv), std::exp(sv),
                  tv / std::log(2.0), sv / std::log(2.0), fp32_bytes(teacher), packed_file_bytes, t_teacher,
                  t_student, pv, sv_dec, packed_file_bytes, packs ? packed_bits_per_weight(packed) : 32.0, scale_bits,
                  tok_s[0], tok_s[1], tok_s[2], num_threads());
    std::string json = buf;
    for (const RunSpec* r : {&tspec, &sspec}) {  // each run's learning-rate schedule ([O3])
        const Schedule& sc = r->opt.schedule;
        std::snprintf(buf, sizeof buf, "  \"%s_schedule\": {\"peak\": %g, \"floor\": %g, \"warmup\": %d},\n",
                      r->name.c_str(), sc.peak, sc.floor, sc.warmup);
        json += buf;
    }
    json += "  \"teacher_checkpoint\": " + json_str(tckpt) + ",\n  \"student_checkpoint\": " +
            json_str(out + "/student_" + tag + ".ckpt") + ",\n  \"packed_file\": " + json_str(packs ? ppath : "") + ",\n";
    json += "  \"teacher_sample\": " + json_str(s_teacher) + ",\n  \"student_sample\": " + json_str(s_student) + "\n}\n";
    write_file_atomic(out + "/summary_" + tag + ".json", std::vector<unsigned char>(json.begin(), json.end()));
    std::printf("\nwrote %s/{%s.ckpt, student_%s.ckpt, %sstudent_%s.csv, summary_%s.json}  (total %s)\n",
                out.c_str(), tname.c_str(), tag.c_str(), packs ? ("student_" + tag + ".fbipack, ").c_str() : "",
                tag.c_str(), tag.c_str(),
                fmt_duration(now_seconds() - t_start).c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
