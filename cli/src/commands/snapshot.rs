//! `weft snapshot save|restore FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{expect_success, ApiArgs};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Save the whole replicated state to FILE.
    Save(FileArgs),
    /// Replace the whole replicated state with FILE (made by `save`).
    Restore(FileArgs),
}

#[derive(Args)]
pub struct FileArgs {
    file: PathBuf,
    #[command(flatten)]
    api: ApiArgs,
}

impl SnapshotCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            SnapshotCommand::Save(args) => {
                let response = expect_success(args.api.client().get("/v1/snapshot").await?, "saving the snapshot")?;
                let temp = args.file.with_extension("partial");
                std::fs::write(&temp, &response.body)
                    .and_then(|_| std::fs::rename(&temp, &args.file))
                    .with_context(|| format!("cannot write {}", args.file.display()))?;
                println!("Saved snapshot at index {}", response.consul_index().unwrap_or(0));
            }
            SnapshotCommand::Restore(args) => {
                let data = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
                expect_success(args.api.client().put("/v1/snapshot", data).await?, "restoring the snapshot")?;
                println!("Restored snapshot");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
