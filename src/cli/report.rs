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
    /// Include runs whose training is unfinished (their rows and figures are
    /// marked "(unfinished)"); without it such a run is an error.
    #[arg(long)]
    pub allow_unfinished: bool,
}

pub fn run(a: ReportArgs) -> Result<()> {
    for d in crate::eval::report::expand_run_dirs(&a.runs)? {
        crate::run_state::check_report_run(&d, a.allow_unfinished)?;
    }
    let (html, md) = crate::eval::report::write_report(&a.runs, &a.out)?;
    println!("wrote {}\nwrote {}", html.display(), md.display());
    Ok(())
}
