//! Progress on stderr for the libraries' callbacks: an indicatif bar on a terminal, else
//! `tracing` lines. The libraries themselves draw nothing.

use std::io::IsTerminal;

use hippo_eval::Progress;
use hippo_train::StepMetrics;

/// A reporter for [`hippo_train::Trainer::run`]: a bar with the loss, the rate and the
/// throughput on a terminal; otherwise a `train` line at steps 1, every `log_every` and the
/// last.
pub fn train_reporter(log_every: usize) -> impl FnMut(&StepMetrics, usize) {
    let mut bar: Option<indicatif::ProgressBar> = None;
    let terminal = std::io::stderr().is_terminal();
    move |m: &StepMetrics, total: usize| {
        if terminal {
            let pb = bar.get_or_insert_with(|| {
                let pb = indicatif::ProgressBar::new(total as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
                ) {
                    pb.set_style(style);
                }
                pb
            });
            pb.set_position(m.step as u64);
            pb.set_message(format!(
                "loss {:.4} lm {:.4} lr {:.2e} {:.0} tok/s",
                m.loss, m.lm, m.lr, m.tokens_per_sec
            ));
            if m.step >= total {
                pb.finish();
            }
        } else if m.step == 1 || m.step == total || m.step.is_multiple_of(log_every.max(1)) {
            tracing::info!(
                step = m.step,
                total_steps = total,
                loss = m.loss,
                lm = m.lm,
                lr = m.lr,
                grad_norm = m.grad_norm,
                tokens_per_sec = m.tokens_per_sec,
                "train"
            );
        }
    }
}

/// A progress reporter on stderr: an indicatif bar on a terminal, else a line every ~10 %.
pub fn eval_reporter(label: &'static str) -> impl FnMut(Progress) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {pos}/{len} tokens ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(label);
        b
    });
    let mut next_line = 0usize;
    move |p: Progress| {
        if let Some(b) = &bar {
            b.set_length(p.tokens_total as u64);
            b.set_position(p.tokens_done as u64);
            if p.tokens_done >= p.tokens_total {
                b.finish();
            }
        } else if p.tokens_done >= next_line || p.tokens_done >= p.tokens_total {
            eprintln!("{label}: {}/{} tokens", p.tokens_done, p.tokens_total);
            next_line = p.tokens_done + p.tokens_total.div_ceil(10).max(1);
        }
    }
}
