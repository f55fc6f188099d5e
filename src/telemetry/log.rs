//! The process's log: the global tracing subscriber, JSON or pretty, written by a thread
//! of its own so that no request ever waits for stdout.
//!
//! A request formats its line and hands it to a bounded queue; the writer thread takes
//! lines from it and writes them. When stdout is slower than the lines come (a container
//! runtime reading slowly, a full pipe), the queue fills and further lines are dropped
//! and counted (`jtl_sidecar_log_lines_dropped_total`) instead of blocking the request.

use std::io::{BufWriter, IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::json::JsonLayer;
use crate::config::{LogConfig, LogFormat};

/// Lines queued for the writer thread at most: about 1.2 MB at 300 bytes a line, a fifth
/// of a second of a stdout that stalls at 20 000 requests a second. A full queue drops
/// lines rather than grow.
const QUEUED_LINES: usize = 4096;

/// How long the writer thread waits after writing everything queued before it looks
/// again. Under load the lines of that moment are then written with one system call, the
/// request threads never have to wake the writer, and the writer itself wakes 100 times a
/// second, not once a line (each wake a context switch on a busy core); a line waits at
/// most this long longer. The queue holds this long at up to 400 000 lines a second.
const WRITE_PAUSE: Duration = Duration::from_millis(10);

/// The buffer the writer thread gathers lines in between two writes.
const WRITE_BUFFER: usize = 64 * 1024;

/// At shutdown, how long the last lines (e.g. "stopped") may take to be written: a
/// stdout nobody reads must not keep the process from exiting.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The count of dropped lines, once the writer is installed.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the writer's queue was full.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |counter| {
        u64::try_from(counter.dropped_lines()).unwrap_or(u64::MAX)
    })
}

/// Keeps the writer thread; when dropped (at the end of `run` or `dev`), writes the lines
/// still queued, waiting at most [`FLUSH_WAIT`].
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(Option<WorkerGuard>);

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else {
            return;
        };
        // The worker guard's own drop waits about a second for the writer, but when the
        // queue is full it prints a complaint to stdout, which blocks for good on a pipe
        // nobody reads. So it is dropped on a thread of its own, waited for a while.
        let (done, finished) = std::sync::mpsc::channel();
        let flushing = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                drop(guard);
                let _ = done.send(());
            });
        if flushing.is_ok() {
            let _ = finished.recv_timeout(FLUSH_WAIT);
        }
    }
}

/// Installs the global tracing subscriber: `log.level` unless `RUST_LOG` is set, in
/// `log.format`, through the non-blocking writer. `to_stderr` keeps stdout free for
/// `dev`'s instructions. Does nothing when a subscriber is already installed (tests
/// start several servers). The pretty format is coloured only when the stream it writes
/// to is a terminal.
pub fn init_logging(config: &LogConfig, to_stderr: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = if to_stderr {
        non_blocking(std::io::stderr())
    } else {
        non_blocking(std::io::stdout())
    };
    let dropped = writer.error_counter();
    let installed = match config.format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(JsonLayer::new(writer))
            .try_init()
            .is_ok(),
        LogFormat::Pretty => {
            let no_color = std::env::var_os("NO_COLOR");
            let terminal = if to_stderr {
                std::io::stderr().is_terminal()
            } else {
                std::io::stdout().is_terminal()
            };
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_ansi(pretty_colours(terminal, no_color.as_deref()))
                .try_init()
                .is_ok()
        }
    };
    if !installed {
        return LogGuard(None);
    }
    let _ = DROPPED.set(dropped);
    LogGuard(Some(guard))
}

/// The lossy, bounded writer of all log lines, and the guard of its thread.
fn non_blocking<W: Write + Send + 'static>(out: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(Batched(BufWriter::with_capacity(WRITE_BUFFER, out)))
}

/// The writer thread's output. tracing-appender's worker writes each queued line and
/// flushes once the queue is empty: the flush writes what gathered and then pauses
/// [`WRITE_PAUSE`], so lines arriving meanwhile are taken as one batch.
struct Batched<W: Write>(BufWriter<W>);

impl<W: Write> Write for Batched<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes)
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.0.flush();
        std::thread::sleep(WRITE_PAUSE);
        result
    }
}

/// Whether the pretty format colours its lines: only when the stream it writes to is a
/// terminal (a file, a pipe or a container runtime's log collector gets plain text, not
/// escape codes), and never when `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>).
fn pretty_colours(stream_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stream_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::telemetry::Captured;

    /// What the pretty format (as `init_logging` builds it) writes for one event.
    fn pretty_line(ansi: bool) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .with_ansi(ansi)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(status = 401, "a token was refused");
        });
        captured.text()
    }

    #[test]
    fn pretty_logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
        // A file (as a pipe or a log collector) is no terminal: plain text.
        let file = tempfile::tempfile().unwrap();
        assert!(!file.is_terminal());
        assert!(!pretty_colours(file.is_terminal(), None));
        let plain = pretty_line(pretty_colours(file.is_terminal(), None));
        assert!(plain.contains("a token was refused"), "{plain:?}");
        assert!(!plain.contains('\x1b'), "escape codes in {plain:?}");
        // The same formatter with colours on does write escape codes, so the check above
        // would notice them.
        assert!(pretty_line(true).contains('\x1b'));
    }

    #[test]
    fn no_color_turns_colours_off_even_on_a_terminal() {
        assert!(pretty_colours(true, None));
        assert!(pretty_colours(true, Some(std::ffi::OsStr::new(""))));
        assert!(!pretty_colours(true, Some(std::ffi::OsStr::new("1"))));
    }

    #[test]
    fn the_writer_drops_and_counts_lines_past_its_queue_and_writes_the_rest_when_flushed() {
        // An output that blocks until told to go on: the writer thread stalls on the
        // first line, as on a pipe nobody reads.
        struct Gate {
            open: std::sync::mpsc::Receiver<()>,
            written: Captured,
            waited: bool,
        }
        impl Write for Gate {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                if !self.waited {
                    self.waited = true;
                    let _ = self.open.recv();
                }
                self.written.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (open, gate) = std::sync::mpsc::channel();
        let written = Captured::default();
        // A write buffer of one byte: every line reaches the gate at once.
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(4)
            .finish(Batched(BufWriter::with_capacity(
                1,
                Gate {
                    open: gate,
                    written: written.clone(),
                    waited: false,
                },
            )));
        let dropped = writer.error_counter();
        let mut lines = 0;
        // Lines go in without waiting until the queue is full and one is dropped.
        while dropped.dropped_lines() == 0 {
            lines += 1;
            assert!(lines <= 100, "no line dropped after 100");
            writer
                .clone()
                .write_all(format!("line {lines}\n").as_bytes())
                .unwrap();
        }
        open.send(()).unwrap();
        drop(LogGuard(Some(guard)));
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        let kept = text.lines().count();
        assert_eq!(kept + dropped.dropped_lines(), lines, "{text}");
        assert!(text.ends_with('\n') && kept >= 4, "{text}");
    }
}
