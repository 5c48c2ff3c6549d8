//! Script checks: run a program, judged by its exit code.
//!
//! As in Consul (`args`; the deprecated shell `script` form is the caller's business: pass
//! `["sh", "-c", script]`):
//!
//! - The program is `args[0]`, run directly (no shell) with the rest as arguments, stdin empty,
//!   the agent's environment inherited.
//! - Exit 0 is passing, exit 1 is warning, anything else (or death by a signal, or failing to
//!   start) is critical.
//! - The output is stdout and stderr combined through one pipe, so they interleave as written.
//!   Only the last [`MAX_OUTPUT_BYTES`] are kept, after Consul's `Captured N of M bytes` note.
//!   When the program printed nothing, the output describes how it ended.
//! - The run ends when the program has exited and the pipe is closed: a background child that
//!   keeps the pipe open keeps the check running (Go's `exec.Cmd` behaves the same).
//! - On Unix the program leads its own process group; on timeout, or if the run is cancelled,
//!   the whole group is killed (`SIGKILL`), so children it forked do not outlive the check.
//!   The output then starts `Timed out (1s) running check`.

use std::time::Duration;

#[cfg(unix)]
use crate::output::Tail;
use crate::ProbeResult;
#[cfg(unix)]
use crate::{HealthStatus, MAX_OUTPUT_BYTES};

/// Runs `args`, killing it after `timeout`.
#[cfg(unix)]
pub async fn run(args: &[String], timeout: Duration) -> ProbeResult {
    let Some((program, arguments)) = args.split_first() else {
        return ProbeResult::critical("script check has no command to run");
    };
    let mut output = Tail::new(MAX_OUTPUT_BYTES);
    match unix::run(program, arguments, timeout, &mut output).await {
        Ok(Some(status)) => {
            let health = match status.code() {
                Some(0) => HealthStatus::Passing,
                Some(1) => HealthStatus::Warning,
                _ => HealthStatus::Critical,
            };
            let text = if output.is_empty() { unix::describe(status) } else { output.render() };
            ProbeResult::new(health, text)
        }
        Ok(None) => {
            let mut text = format!("Timed out ({timeout:?}) running check");
            if !output.is_empty() {
                text.push('\n');
                text.push_str(&output.render());
            }
            ProbeResult::critical(text)
        }
        Err(err) => ProbeResult::critical(format!("failed to run {program:?}: {err}")),
    }
}

/// Script checks need Unix process groups and pipes; elsewhere they are always critical.
#[cfg(not(unix))]
pub async fn run(_args: &[String], _timeout: Duration) -> ProbeResult {
    ProbeResult::critical("script checks are only supported on Unix")
}

#[cfg(unix)]
mod unix {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{ExitStatus, Stdio};
    use std::time::Duration;

    use rustix::process::{kill_process_group, Pid, Signal};
    use tokio::io::AsyncReadExt;
    use tokio::net::unix::pipe;
    use tokio::process::Command;

    use crate::output::Tail;

    /// Runs the program, collecting its output into `output`; `None` if it ran out of time.
    pub(super) async fn run(
        program: &str,
        arguments: &[String],
        timeout: Duration,
        output: &mut Tail,
    ) -> io::Result<Option<ExitStatus>> {
        let (reader, writer) = io::pipe()?;
        let mut command = Command::new(program);
        command
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        // The command holds our copies of the pipe's write end: drop them, or EOF never comes.
        drop(command);
        let mut group = KillGroupOnDrop(child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw));
        let mut reader = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;

        let finished = tokio::time::timeout(timeout, async {
            let mut chunk = vec![0; 8 * 1024];
            loop {
                let read = reader.read(&mut chunk).await?;
                if read == 0 {
                    break;
                }
                output.push(&chunk[..read]);
            }
            child.wait().await
        })
        .await;
        match finished {
            Ok(Ok(status)) => {
                // Reaped: the id may be reused from now on, so never signal it again.
                group.0 = None;
                Ok(Some(status))
            }
            Ok(Err(err)) => Err(err),
            // `group` kills the process group, and `child` (kill_on_drop) its leader.
            Err(_) => Ok(None),
        }
    }

    /// How the program ended, for when it printed nothing.
    pub(super) fn describe(status: ExitStatus) -> String {
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("terminated by signal {signal}"),
            (None, None) => status.to_string(),
        }
    }

    /// Kills the process group led by the child unless disarmed (set to `None`) once reaped.
    struct KillGroupOnDrop(Option<Pid>);

    impl Drop for KillGroupOnDrop {
        fn drop(&mut self) {
            if let Some(group) = self.0 {
                if let Err(err) = kill_process_group(group, Signal::KILL) {
                    tracing::debug!(error = %err, "script check: killing the process group");
                }
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::test_support::TEST_TIMEOUT;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_map_to_statuses() {
        for (script, status) in [
            ("exit 0", HealthStatus::Passing),
            ("exit 1", HealthStatus::Warning),
            ("exit 2", HealthStatus::Critical),
            ("exit 255", HealthStatus::Critical),
            ("kill -9 $$", HealthStatus::Critical),
        ] {
            let result = run(&sh(script), TEST_TIMEOUT).await;
            assert_eq!(result.status, status, "{script}: {}", result.output);
        }
    }

    #[tokio::test]
    async fn output_is_stdout_and_stderr_interleaved() {
        let result = run(&sh("echo one; echo two >&2; echo three"), TEST_TIMEOUT).await;

        assert_eq!(result.status, HealthStatus::Passing);
        assert_eq!(result.output, "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn silent_failure_describes_the_exit() {
        assert_eq!(run(&sh("exit 3"), TEST_TIMEOUT).await.output, "exit status 3");
        assert_eq!(run(&sh("kill -9 $$"), TEST_TIMEOUT).await.output, "terminated by signal 9");
    }

    #[tokio::test]
    async fn long_output_keeps_the_tail() {
        let result = run(&sh("head -c 10000 /dev/zero | tr '\\0' a; printf END"), TEST_TIMEOUT).await;

        assert_eq!(result.status, HealthStatus::Passing);
        let (note, kept) = result.output.split_once("\n...\n").unwrap_or_default();
        assert_eq!(note, format!("Captured {MAX_OUTPUT_BYTES} of 10003 bytes"));
        assert_eq!(kept.len(), MAX_OUTPUT_BYTES);
        assert!(kept.ends_with("aaaEND"), "{kept}");
    }

    #[tokio::test]
    async fn arguments_are_passed_without_a_shell() {
        let args = vec!["echo".to_owned(), "$HOME".to_owned(), "a b".to_owned()];

        let result = run(&args, TEST_TIMEOUT).await;

        assert_eq!(result.output, "$HOME a b\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let marker = std::env::temp_dir().join(format!("weft-checks-{}-timeout", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        // A grandchild that would write the marker if it survived the kill.
        let script = format!("echo started; (sleep 1; touch {}) & sleep 30", marker.display());

        let started = tokio::time::Instant::now();
        let result = run(&sh(&script), Duration::from_millis(300)).await;

        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        assert_eq!(result.status, HealthStatus::Critical);
        assert_eq!(result.output, "Timed out (300ms) running check\nstarted\n");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "a child of the script outlived the timeout");
    }

    #[tokio::test]
    async fn missing_program_and_empty_args_are_critical() {
        let result = run(&["/nonexistent/weft-check".to_owned()], TEST_TIMEOUT).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.starts_with("failed to run \"/nonexistent/weft-check\": "), "{}", result.output);

        let result = run(&[], TEST_TIMEOUT).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert_eq!(result.output, "script check has no command to run");
    }
}
