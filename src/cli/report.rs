use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run directories to include (each with eval.json, config.toml and figures),
    /// or `reproduce` output folders (every evaluated run inside).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output directory for report.html and report.md.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
}

pub fn run(a: ReportArgs) -> Result<()> {
    let (html, md) = crate::eval::report::write_report(&a.runs, &a.out)?;
    println!("wrote {}\nwrote {}", html.display(), md.display());
    Ok(())
}
