//! What the demo prints: numbered steps, each command as an operator would type it
//! (`$ gantry …`, with the working directory written `$DEMO`), and what it answered.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::DemoError;

#[derive(Debug)]
pub(super) struct Console {
    started: Instant,
    work: String,
    /// Values printed under a short name (a long join token, say).
    aliases: Vec<(String, String)>,
    step: usize,
    steps: usize,
    bold: bool,
}

impl Console {
    pub(super) fn new(work: &Path, steps: usize) -> Self {
        Self {
            started: Instant::now(),
            work: work.display().to_string(),
            aliases: Vec::new(),
            step: 0,
            steps,
            bold: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub(super) fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The step being run, for the failure message.
    pub(super) fn current(&self) -> usize {
        self.step
    }

    /// Starts the next step: its title, and what it shows.
    pub(super) fn step(&mut self, title: &str, what: &str) {
        self.step += 1;
        self.heading(&format!("[{}/{}] {title}", self.step, self.steps), what);
    }

    /// A heading outside the numbered steps.
    pub(super) fn heading(&self, heading: &str, what: &str) {
        if self.bold {
            println!("\n\x1b[1m{heading}\x1b[0m");
        } else {
            println!("\n{heading}");
        }
        for line in wrap(what, 88) {
            println!("      {line}");
        }
    }

    /// A line of narration.
    pub(super) fn say(&self, text: &str) {
        println!("  {}", self.shorten(text));
    }

    /// Command output, indented under its command.
    pub(super) fn show(&self, text: &str) {
        for line in text.lines() {
            println!("    {}", self.shorten(line));
        }
    }

    /// A timed event (rollout progress), relative to the demo's start.
    pub(super) fn event(&self, text: &str) {
        println!("    +{:5.1}s  {}", self.elapsed_s(), self.shorten(text));
    }

    pub(super) fn alias(&mut self, value: &str, name: &str) {
        self.aliases.push((value.to_owned(), name.to_owned()));
    }

    fn shorten(&self, text: &str) -> String {
        let mut text = text.replace(&self.work, "$DEMO");
        for (value, name) in &self.aliases {
            text = text.replace(value, name);
        }
        text
    }

    /// Prints `$ name args…`, runs `program` with them and prints what it wrote; its
    /// standard output is returned. A non-zero exit fails the step with its stderr.
    pub(super) fn run(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &OsStr)],
    ) -> Result<String, DemoError> {
        let line = format!("{name} {}", quote(args));
        println!("  $ {}", self.shorten(&line));
        let stdout = run_quiet(program, args, env).map_err(|e| e.named(self.shorten(&line)))?;
        self.show(&stdout);
        Ok(stdout)
    }
}

/// Runs a command without printing it; standard output on success.
pub(super) fn run_quiet(
    program: &Path,
    args: &[String],
    env: &[(&str, &OsStr)],
) -> Result<String, DemoError> {
    let mut command = Command::new(program);
    // A process group of its own: Ctrl-C in the terminal reaches the demo alone, which
    // then stops what it started in order, instead of racing a child that dies of it.
    command
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .process_group(0);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .output()
        .map_err(|e| DemoError::io(format!("run {}", program.display()), e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else if killed_by_interruption(output.status) {
        // A Ctrl-C that reached the command before it left the demo's process group (the
        // instant between its fork and its exec): the interruption, not a failed step.
        Err(DemoError::Interrupted)
    } else {
        Err(DemoError::Command {
            command: format!("{} {}", program.display(), quote(args)),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

impl DemoError {
    /// A failed command, named as it was shown.
    fn named(self, shown: String) -> Self {
        match self {
            Self::Command { status, stderr, .. } => Self::Command {
                command: shown,
                status,
                stderr,
            },
            other => other,
        }
    }
}

/// Whether a command was ended by SIGINT or SIGTERM: only an interruption sends those.
pub(super) fn killed_by_interruption(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    matches!(
        status.signal(),
        Some(s) if s == rustix::process::Signal::INT.as_raw() || s == rustix::process::Signal::TERM.as_raw()
    )
}

/// Arguments as a shell would need them.
fn quote(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() {
                "\"\"".to_owned()
            } else if a.contains([' ', '*', '"', '$', '&', ';', '|', '\'']) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `path` as an argument.
pub(super) fn arg(path: &Path) -> String {
    path.display().to_string()
}

/// The `gantry` executable running this demo, for the commands it shows.
pub(super) fn this_executable() -> Result<PathBuf, DemoError> {
    std::env::current_exe().map_err(|e| DemoError::io("find the gantry executable", e))
}
