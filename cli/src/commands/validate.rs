//! `weft validate PATH...`: checks config files (or directories of them)
//! the way `weft agent --config-file/--config-dir` would read them, without
//! starting anything, like `consul validate`. For an `ExecStartPre=` or an
//! install script: a config that would not start is caught before a restart.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use weft_agent::config::read_sources;

#[derive(Args)]
pub struct ValidateArgs {
    /// Config files (HCL or JSON) and directories of them, merged in order.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    paths: Vec<PathBuf>,
    /// Print nothing when the configuration is valid.
    #[arg(long)]
    quiet: bool,
}

impl ValidateArgs {
    pub fn run(self) -> ExitCode {
        let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) = self.paths.into_iter().partition(|p| p.is_dir());
        let merged = match read_sources(&files, &dirs) {
            Ok(merged) => merged,
            Err(errors) => {
                eprintln!("Config validation failed: {errors}");
                return ExitCode::FAILURE;
            }
        };
        match merged.validate() {
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
