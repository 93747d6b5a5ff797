//! Progress reporting: bars on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Read};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports build phases and byte progress.
#[derive(Clone)]
pub struct Progress {
    bars: bool,
    quiet: bool,
}

impl Progress {
    /// Bars when stderr is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            bars: !quiet && std::io::stderr().is_terminal(),
            quiet,
        }
    }

    /// Announces a phase.
    pub fn phase(&self, msg: &str) {
        if !self.quiet {
            eprintln!("nodebake: {msg}");
        }
    }

    /// Wraps a reader of `total` bytes in a bar labelled `label`.
    pub fn reader<'a, R: Read + 'a>(&self, label: &str, total: u64, r: R) -> Box<dyn Read + 'a> {
        if !self.bars {
            return Box::new(r);
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Box::new(FinishOnDrop(bar.wrap_read(r), bar))
    }
}

struct FinishOnDrop<R>(indicatif::ProgressBarIter<R>, ProgressBar);

impl<R: Read> Read for FinishOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R> Drop for FinishOnDrop<R> {
    fn drop(&mut self) {
        self.1.finish_and_clear();
    }
}
