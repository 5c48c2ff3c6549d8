//! `weft validate [PATH...] [AGENT FLAGS]`: checks config files (or
//! directories of them) and `weft agent`'s flags the way the agent would
//! merge them, without starting anything, like `consul validate`. For an `ExecStartPre=` or an
//! install script: a config that would not start is caught before a restart.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use weft_agent::config::ConfigFile;

use super::agent::{merged_config, AgentArgs};

#[derive(Args)]
pub struct ValidateArgs {
    /// Config files (HCL or JSON) and directories of them, merged in order
    /// (before any --config-file and --config-dir).
    #[arg(value_name = "FILE_OR_DIR")]
    paths: Vec<PathBuf>,
    /// Print nothing when the configuration is valid.
    #[arg(long)]
    quiet: bool,
    /// The flags `weft agent` takes, checked with the files as the agent
    /// would merge them (so a command line can be validated as written).
    #[command(flatten)]
    agent: AgentArgs,
}

impl ValidateArgs {
    pub fn run(self) -> ExitCode {
        let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) = self.paths.into_iter().partition(|p| p.is_dir());
        let validated = merged_config(&self.agent, ConfigFile::default(), (&files, &dirs))
            .and_then(|merged| merged.validate().map_err(|errors| errors.to_string()));
        match validated {
            Ok(_) => {
                if !self.quiet {
                    println!("Configuration is valid!");
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("Config validation failed: {errors}");
                ExitCode::FAILURE
            }
        }
    }
}
