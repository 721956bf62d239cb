//! `cargo xtask train` killed with SIGKILL and resumed, as a crash meets it: a real child
//! process on the tiny Gemma 3 fixture (a word-level tokenizer and a `txt-dir:` corpus made
//! here), checkpoints every 2 steps, killed at several points — mid-step, while a checkpoint's
//! files are being written and while they are being sealed (a test-only delay,
//! `HIPPO_TEST_CHECKPOINT_DELAY_MS`, widens those windows) — then resumed with `--resume`. After
//! each kill the newest checkpoint that verifies is at most one checkpoint interval behind the
//! last step the process finished; the final weights are bit-identical to an uninterrupted
//! run's.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use hippo_train::trainer::state;

use common::{Setup, root, setup};

const STEPS: usize = 16;
const EVERY: usize = 2;
fn train(s: &Setup, out: &Path, resume: bool, delay_ms: u64) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    let steps = STEPS.to_string();
    let every = EVERY.to_string();
    let dataset = format!("txt-dir:{}", s.corpus.display());
    c.args(["train", "--model"])
        .arg(&s.base)
        .arg("--tokenizer")
        .arg(&s.tokenizer)
        .arg("--config")
        .arg(&s.config)
        .args(["--dataset", &dataset])
        .args([
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--max-steps",
            &steps,
        ])
        .args(["--checkpoint-every", &every, "--keep-last", "0"])
        .args(["--valid-batches", "0", "--lr", "3e-3", "--seed", "7"])
        .arg("--output-dir")
        .arg(out)
        .current_dir(root())
        .env("HIPPO_HOME", &s.home)
        .env("RUST_LOG", "warn")
        .env(hippo_model::integrity::DELAY_ENV, delay_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        c.arg("--resume");
    }
    c
}

fn finish(mut c: Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The last step the process finished (from metrics.jsonl; a torn last line is ignored).
fn last_step(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0) as usize
}

/// Temporary checkpoint directories (a checkpoint being written) created after `since`.
fn tmp_dirs(root: &Path, since: SystemTime) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name().to_string_lossy().starts_with(".tmp-step-")
                        && e.metadata()
                            .and_then(|m| m.modified())
                            .is_ok_and(|t| t >= since)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `ready` holds (polling every 2 ms), then SIGKILLs the child. Returns whether
/// the child was still running when killed (false: it had already exited).
fn kill_when(child: &mut Child, ready: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ready() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "kill point never reached"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    true
}

struct Bits(Vec<String>, Vec<(String, Vec<u32>)>);

impl ModuleVisitor for Bits {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let v = p
            .base()
            .to_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        self.1
            .push((self.0.join("."), v.iter().map(|x| x.to_bits()).collect()));
    }
}

fn weights(base: &Path, ckpt: &Path) -> Vec<(String, Vec<u32>)> {
    let device = Device::flex();
    let gemma = hippo_gemma::load(base.to_str().unwrap(), &device)
        .unwrap()
        .model;
    let (m, meta) = hippo_model::checkpoint::load(gemma, base, ckpt, &device).unwrap();
    assert_eq!(meta.step as usize, STEPS);
    let mut b = Bits(Vec::new(), Vec::new());
    m.visit(&mut b);
    b.1
}

#[test]
fn sigkill_at_several_points_then_resume_ends_bit_identical() {
    let started = Instant::now();
    let s = setup();
    let straight = s.tmp.path().join("straight");
    finish(train(&s, &straight, false, 0));
    let t_straight = started.elapsed();

    let out = s.tmp.path().join("killed");
    let ckpts = out.join("checkpoints");
    let delay = 40;
    // (what, when to kill): each resumes from what the previous kill left.
    type Ready<'a> = Box<dyn Fn(SystemTime) -> bool + 'a>;
    let points: Vec<(&str, Ready<'_>)> = vec![
        ("mid-step, after step 3", Box::new(|_| last_step(&out) >= 3)),
        (
            "writing a checkpoint's files",
            Box::new(|t| !tmp_dirs(&ckpts, t).is_empty()),
        ),
        (
            "sealing a checkpoint (hashing; meta.json not yet written)",
            Box::new(|t| {
                tmp_dirs(&ckpts, t)
                    .iter()
                    .any(|d| d.join(state::TRAINER_FILE).is_file())
            }),
        ),
        (
            "right after a checkpoint landed",
            Box::new(|_| {
                state::latest_checkpoint(&ckpts)
                    .ok()
                    .flatten()
                    .is_some_and(|(st, _)| st >= 10)
            }),
        ),
        (
            "writing a checkpoint's files again",
            Box::new(|t| !tmp_dirs(&ckpts, t).is_empty()),
        ),
    ];
    let mut survived = 0;
    let mut first = true;
    for (what, ready) in points {
        let since = SystemTime::now() - Duration::from_millis(20);
        let mut child = train(&s, &out, !first, delay).spawn().unwrap();
        first = false;
        let killed = kill_when(&mut child, || ready(since));
        assert!(killed, "{what}: the run ended before the kill point");
        if what.contains("checkpoint's files") || what.starts_with("sealing") {
            // Killed inside the write: its temporary directory is left, without meta.json.
            let left = tmp_dirs(&ckpts, since);
            assert!(
                !left.is_empty()
                    && left
                        .iter()
                        .all(|d| !d.join(hippo_model::checkpoint::META_FILE).exists()),
                "{what}: not killed inside a checkpoint write ({left:?})"
            );
        }
        let done = last_step(&out);
        let resumable = state::latest_verified_checkpoint(&ckpts)
            .unwrap()
            .map_or(0, |(st, _)| st);
        assert!(
            done - resumable <= EVERY,
            "{what}: finished step {done}, but the newest checkpoint that verifies is {resumable}"
        );
        eprintln!("killed {what}: finished step {done}, resumable from {resumable}");
        survived += 1;
    }
    // Resume to the end, without the delay.
    finish(train(&s, &out, true, 0));
    let final_dir = ckpts.join(state::step_dir_name(STEPS));
    let (a, b) = (
        weights(
            &s.base,
            &straight
                .join("checkpoints")
                .join(state::step_dir_name(STEPS)),
        ),
        weights(&s.base, &final_dir),
    );
    assert_eq!(a.len(), b.len());
    for ((pa, va), (pb, vb)) in a.iter().zip(&b) {
        assert_eq!(pa, pb);
        assert!(va == vb, "{pa} differs after kills and resumes");
    }
    // Every checkpoint left verifies; no temporary remains after the clean finish.
    let left = state::list_checkpoints(&ckpts).unwrap();
    assert_eq!(left.len(), STEPS / EVERY);
    for (_, d) in left {
        hippo_model::checkpoint::verify(&d).unwrap();
    }
    assert!(tmp_dirs(&ckpts, SystemTime::UNIX_EPOCH).is_empty());
    eprintln!(
        "{survived} kill points survived; uninterrupted run {t_straight:.1?}, whole test {:.1?}",
        started.elapsed()
    );
}
