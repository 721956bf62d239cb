//! Training checkpoints and damage: every file of a training checkpoint (optimizer, memory and
//! trainer state too) is hashed in `meta.json`; `resume` skips a newest checkpoint that does
//! not verify, says which and why, and still ends bit-identical to an uninterrupted run; a
//! checkpoint write onto a full or read-only file system fails with a clear error and leaves the
//! previous checkpoint intact.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use hippo_data::Split;
use hippo_model::HippoFormer;
use hippo_model::checkpoint;
use hippo_train::trainer::{self, TrainError, TrainOptions, state};

mod common;

use common::{base, base_dir, config, corpus, device, opts, serial};

fn run(o: &TrainOptions) -> Result<(HippoFormer, trainer::TrainSummary), TrainError> {
    trainer::train_model(
        base(),
        &base_dir(),
        config(),
        corpus(8, Split::Train),
        None,
        o,
        &device(),
    )
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

fn bits(m: &HippoFormer) -> Vec<(String, Vec<u32>)> {
    let mut b = Bits(Vec::new(), Vec::new());
    m.visit(&mut b);
    b.1
}

fn flip_mid(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
}

fn steps(root: &Path) -> Vec<usize> {
    state::list_checkpoints(root)
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect()
}

#[test]
fn every_file_of_a_training_checkpoint_is_hashed() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (_, s) = run(&TrainOptions {
        max_steps: Some(2),
        ..opts(tmp.path())
    })
    .unwrap();
    let dir = s.final_checkpoint.unwrap();
    let meta = checkpoint::verify(&dir).unwrap();
    let mut want = vec![
        checkpoint::CONFIG_FILE,
        state::MEMORY_FILE,
        checkpoint::MODEL_FILE,
        state::OPTIMIZER_FILE,
        state::TRAINER_FILE,
    ];
    want.sort_unstable();
    assert_eq!(
        meta.files.keys().map(String::as_str).collect::<Vec<_>>(),
        want
    );
    // Damage to a file the model loader itself never reads is still found.
    for f in [
        state::OPTIMIZER_FILE,
        state::MEMORY_FILE,
        state::TRAINER_FILE,
    ] {
        let p = dir.join(f);
        let orig = std::fs::read(&p).unwrap();
        flip_mid(&p);
        let e = checkpoint::verify(&dir).unwrap_err().to_string();
        assert!(e.contains(f) && e.contains("corrupt"), "{f}: {e}");
        std::fs::write(&p, orig).unwrap();
    }
    checkpoint::verify(&dir).unwrap();
}

#[test]
fn resume_skips_a_corrupt_newest_checkpoint_and_still_ends_bit_identical() {
    let _g = serial();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let o = |dir: &Path| TrainOptions {
        max_steps: Some(8),
        checkpoint_every: 2,
        keep_last: 0,
        ..opts(dir)
    };
    let (straight, _) = run(&o(a.path())).unwrap();
    let (_, s1) = run(&TrainOptions {
        stop_at_step: Some(6),
        ..o(b.path())
    })
    .unwrap();
    assert_eq!(s1.steps, 6);
    let root = b.path().join("checkpoints");
    assert_eq!(steps(&root), [2, 4, 6]);
    flip_mid(&root.join("step-00000006").join(state::OPTIMIZER_FILE));

    let (found, dir) = state::latest_verified_checkpoint(&root).unwrap().unwrap();
    assert_eq!(found, 4);
    assert_eq!(dir, root.join("step-00000004"));
    // The corrupt one is kept aside for inspection, out of the list.
    assert!(root.join(".corrupt-step-00000006").is_dir());
    assert_eq!(steps(&root), [2, 4]);

    let (resumed, s2) = run(&TrainOptions {
        resume: true,
        ..o(b.path())
    })
    .unwrap();
    assert_eq!(s2.resumed_from, Some(4), "one checkpoint interval lost");
    assert_eq!(s2.steps, 8);
    assert_eq!(bits(&straight), bits(&resumed));
    assert_eq!(steps(&root), [2, 4, 6, 8]);
    for s in steps(&root) {
        checkpoint::verify(&root.join(state::step_dir_name(s))).unwrap();
    }
}

#[test]
fn resume_with_no_checkpoint_that_verifies_is_an_error_naming_each() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    run(&TrainOptions {
        max_steps: Some(4),
        checkpoint_every: 2,
        ..opts(tmp.path())
    })
    .unwrap();
    let root = tmp.path().join("checkpoints");
    for s in [2, 4] {
        flip_mid(
            &root
                .join(state::step_dir_name(s))
                .join(checkpoint::MODEL_FILE),
        );
    }
    let e = run(&TrainOptions {
        max_steps: Some(4),
        resume: true,
        ..opts(tmp.path())
    })
    .expect_err("nothing verifies")
    .to_string();
    assert!(
        e.contains("no checkpoint verifies")
            && e.contains("step-00000002")
            && e.contains("step-00000004")
            && e.contains("model.bpk"),
        "{e}"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A small tmpfs mounted on a directory for the test's lifetime (root only, where `mount` is
/// permitted).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, opts: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` until a write fails with ENOSPC.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join(".filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    // Byte-sized leftovers too.
    while f.write_all(&[0]).is_ok() {}
}

/// A checkpoint write that fails (ENOSPC, EROFS; EACCES when not root) is an error naming the
/// cause, and the previous checkpoint stays listed and verifies. As root, chmod does not stop
/// writes, so the checkpoints directory is a 16 MiB tmpfs: filled to ENOSPC, then remounted
/// read-only. Where neither works (root without `mount`) the test says so and checks nothing.
#[test]
fn a_full_or_read_only_checkpoint_dir_fails_clearly_and_keeps_the_previous_one() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("checkpoints");
    std::fs::create_dir_all(&root).unwrap();
    let o = TrainOptions {
        max_steps: Some(4),
        checkpoint_every: 2,
        ..opts(tmp.path())
    };
    let first = |o: &TrainOptions| {
        let (_, s) = run(&TrainOptions {
            stop_at_step: Some(2),
            ..o.clone()
        })
        .unwrap();
        assert_eq!(s.steps, 2);
        assert_eq!(steps(&root), [2]);
    };
    let intact = || {
        assert_eq!(steps(&root), [2]);
        let dir = root.join("step-00000002");
        checkpoint::verify(&dir).unwrap();
        checkpoint::load(base(), &base_dir(), &dir, &device()).unwrap();
        let left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporaries left: {left:?}");
    };
    let resume = TrainOptions {
        resume: true,
        ..o.clone()
    };
    if !is_root() {
        first(&o);
        let mut perm = std::fs::metadata(&root).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o555);
        std::fs::set_permissions(&root, perm).unwrap();
        let e = run(&resume).expect_err("read-only").to_string();
        assert!(e.contains("Permission denied"), "{e}");
        intact();
        return;
    }
    let Some(fs) = Tmpfs::mount(&root, "size=16m") else {
        eprintln!("SKIPPED: running as root and `mount -t tmpfs` is not permitted");
        return;
    };
    first(&o);
    fill(&root);
    let e = run(&resume).expect_err("disk full").to_string();
    eprintln!("ENOSPC: {e}");
    assert!(
        e.contains("No space left on device") && e.contains("checkpoints"),
        "{e}"
    );
    std::fs::remove_file(root.join(".filler")).unwrap();
    intact();
    fs.remount("ro");
    let e = run(&resume).expect_err("read-only").to_string();
    eprintln!("EROFS: {e}");
    assert!(e.contains("Read-only file system"), "{e}");
    intact();
    // Writable again: the same resume completes.
    fs.remount("rw");
    let (_, s) = run(&resume).unwrap();
    assert_eq!((s.resumed_from, s.steps), (Some(2), 4));
}
