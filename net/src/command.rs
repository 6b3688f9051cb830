//! How a command of `gantry` or `gantry-agent` fails: one error type that carries its exit
//! code, and one reporter that prints it with its chain of causes. The codes are the
//! contract scripts rely on:
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | done |
//! | 1    | failed (the message says why and what to do) |
//! | 2    | usage: the arguments cannot work together |
//! | 64   | the configuration is invalid; nothing was started |
//! | 130  | interrupted by Ctrl-C or SIGTERM, after cleaning up |

use std::error::Error;
use std::fmt;
use std::process::ExitCode;

/// A command's exit status when it does not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Failure = 1,
    Usage = 2,
    Config = 64,
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A failed command: what it was doing, why, and its exit code.
#[derive(Debug)]
pub struct CommandError {
    exit: Exit,
    /// What the command was doing, as "cannot …"; empty when the error says it all.
    context: String,
    error: Box<dyn Error + Send + Sync + 'static>,
}

impl CommandError {
    /// A failure (exit 1) while doing `context` ("cannot read the bundle").
    pub fn failure(
        context: impl Into<String>,
        error: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Self {
            exit: Exit::Failure,
            context: context.into(),
            error: error.into(),
        }
    }

    /// A failure (exit 1) whose error says everything.
    pub fn from_error(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::failure("", error)
    }

    /// A usage error (exit 2): `message` names the arguments and what works instead.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            context: String::new(),
            error: message.into().into(),
        }
    }

    /// An invalid configuration (exit 64).
    pub fn config(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            exit: Exit::Config,
            context: String::new(),
            error: error.into(),
        }
    }

    /// The command was interrupted and cleaned up (exit 130).
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Interrupted,
            context: String::new(),
            error: message.into().into(),
        }
    }

    pub fn exit(&self) -> Exit {
        self.exit
    }

    /// Prints the error and its causes to stderr, one per line, as operators read them.
    pub fn report(&self) {
        eprint!("{}", self.render());
    }

    /// The report's text.
    pub fn render(&self) -> String {
        use fmt::Write as _;
        let mut out = String::new();
        if self.exit == Exit::Interrupted {
            let _ = writeln!(out, "\n{}", self.error);
            return out;
        }
        if self.context.is_empty() {
            let _ = writeln!(out, "error: {}", self.error);
        } else {
            let _ = writeln!(out, "error: {}: {}", self.context, self.error);
        }
        let mut source = self.error.source();
        while let Some(cause) = source {
            let _ = writeln!(out, "  caused by: {cause}");
            source = cause.source();
        }
        out
    }
}

/// Any error is a failure (exit 1) that says everything itself, so `?` works in commands.
impl<E: Error + Send + Sync + 'static> From<E> for CommandError {
    fn from(error: E) -> Self {
        Self::from_error(error)
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.context.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}: {}", self.context, self.error)
        }
    }
}

/// A command's result: `Ok` carries the code of a command whose answer is itself a
/// status (`verify` says 1 for a refused bundle after printing why).
pub type CommandResult = Result<ExitCode, CommandError>;

/// Reports a failed command and turns either outcome into the process's exit code.
pub fn finish(result: CommandResult) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            e.report();
            e.exit().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the disk is full")]
    struct Full;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write /var/lib/gantry/x")]
    struct Write(#[source] Full);

    #[test]
    fn the_report_names_the_context_then_each_cause_once() {
        let e = CommandError::failure("cannot import the bundle", Write(Full));
        assert_eq!(
            e.render(),
            "error: cannot import the bundle: cannot write /var/lib/gantry/x\n  caused by: the disk is full\n"
        );
        assert_eq!(e.exit(), Exit::Failure);
    }

    #[test]
    fn usage_and_configuration_errors_carry_their_codes() {
        assert_eq!(
            CommandError::usage("--a conflicts with --b").exit() as u8,
            2
        );
        assert_eq!(CommandError::config(Full).exit() as u8, 64);
        assert_eq!(CommandError::interrupted("interrupted").exit() as u8, 130);
        assert_eq!(CommandError::usage("x").render(), "error: x\n");
    }
}
