//! `llq-host sweep plan|run|status|report SPEC`: a study as a matrix of `run`s (crate::sweep).

use crate::sweep::exec::{self, Outcome, State, Workers};
use crate::sweep::plan::{plan, shard, Cell, Shard};
use crate::sweep::spec::Spec;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Expand the spec into cells and print each with its content address and command.
    Plan(Common),
    /// Run the cells not yet done (each one `llq-host run` process); resumable.
    Run(RunArgs),
    /// Done, stale, failed and pending cells.
    Status(Common),
    /// Write <out>/report.md, report.html and figures/ from the finished cells (paired
    /// differences vs the baseline, figures, findings).
    Report(Common),
    /// Write a job-array script that runs the sweep as shards on a cluster engine.
    Emit(EmitArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Engine {
    /// An `sbatch --array` script (array index = shard).
    Slurm,
    /// A Kubernetes Indexed Job (completion index = shard).
    K8s,
    /// A Ray launcher (Python): one Ray task per shard.
    Ray,
}

#[derive(clap::Args, Debug)]
pub struct EmitArgs {
    pub engine: Engine,
    #[command(flatten)]
    pub common: Common,
    /// Shards (array tasks) [default: one per cell]
    #[arg(long)]
    pub shards: Option<usize>,
    /// Request one GPU per shard
    #[arg(long)]
    pub gpu: bool,
    /// Container image holding llq-host and the spec's files (k8s)
    #[arg(long, default_value = "llq:latest")]
    pub image: String,
    /// Where to write the script [default: stdout]
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct Common {
    /// The sweep spec (TOML; see `llq-host sweep` docs in crate::sweep::spec).
    pub spec: PathBuf,
    /// Results folder [default: results/sweeps/<name>]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only the cells of shard I of N (`I/N`, 0-based): every N-th cell of the plan from the
    /// I-th, so shards run anywhere in parallel never overlap.
    #[arg(long)]
    pub shard: Option<Shard>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Cells run at once (processes)
    #[arg(long, default_value_t = 1, conflicts_with = "gpus")]
    pub jobs: usize,
    /// One worker per listed GPU (e.g. 0,1,2,3): each cell's process sees only its GPU
    /// (CUDA_VISIBLE_DEVICES)
    #[arg(long, value_delimiter = ',')]
    pub gpus: Vec<String>,
}

/// The resolved spec, its output folder and the cells this invocation covers.
struct Resolved {
    spec: Spec,
    out: PathBuf,
    cells: Vec<Cell>,
    shard: Option<Shard>,
}

impl Resolved {
    fn new(c: &Common) -> Result<Self> {
        let spec = Spec::load(&c.spec)?;
        let out = c.out.clone().unwrap_or_else(|| PathBuf::from("results/sweeps").join(&spec.name));
        let cells = plan(&spec)?;
        Ok(Resolved { spec, out, cells, shard: c.shard })
    }
    fn mine(&self) -> Vec<&Cell> {
        match &self.shard {
            Some(s) => shard(&self.cells, *s),
            None => self.cells.iter().collect(),
        }
    }
}

pub fn main(a: Args) -> Result<()> {
    match a {
        Args::Plan(c) => {
            let r = Resolved::new(&c)?;
            let mine = r.mine();
            for cell in &mine {
                println!("{}  {}  llq-host {}", &cell.address[..12], cell.id, cell.args.join(" "));
            }
            println!("{} cells; results in {}", mine.len(), r.out.display());
            Ok(())
        }
        Args::Status(c) => {
            let r = Resolved::new(&c)?;
            let mut counts = std::collections::BTreeMap::new();
            for cell in r.mine() {
                let st = exec::state(&r.out, cell);
                *counts.entry(st.label()).or_insert(0) += 1;
                match &st {
                    State::Failed(e) => {
                        println!("{:8} {}  {}", st.label(), cell.id, e.lines().last().unwrap_or(""))
                    }
                    _ => println!("{:8} {}", st.label(), cell.id),
                }
            }
            let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            println!("{} ({})", summary.join(", "), r.out.display());
            Ok(())
        }
        Args::Report(c) => {
            if c.shard.is_some() {
                bail!("--shard does not apply to `sweep report`: it reads every finished cell");
            }
            let r = Resolved::new(&c)?;
            let w = crate::sweep::report::report(&r.spec, &r.cells, &r.out)?;
            let figures = r.out.join("figures");
            std::fs::create_dir_all(&figures)
                .with_context(|| format!("cannot create {}", figures.display()))?;
            for (name, svg) in &w.figures {
                crate::util::fs::write_atomic(&figures.join(name), svg.as_bytes())?;
            }
            crate::util::fs::write_atomic(&r.out.join("report.html"), w.html.as_bytes())?;
            let path = r.out.join("report.md");
            crate::util::fs::write_atomic(&path, w.md.as_bytes())?;
            print!("{}", w.md);
            eprintln!(
                "wrote {}, report.html (self-contained) and {} figures in {}",
                path.display(),
                w.figures.len(),
                figures.display()
            );
            Ok(())
        }
        Args::Emit(e) => {
            if e.common.shard.is_some() {
                bail!("--shard does not apply to `sweep emit`: the script runs every shard");
            }
            let r = Resolved::new(&e.common)?;
            let n = e.shards.unwrap_or(r.cells.len());
            if n == 0 {
                bail!("--shards must be at least 1");
            }
            let exe = std::env::current_exe().context("cannot find the llq-host executable")?;
            let job = crate::sweep::emit::Job {
                name: &r.spec.name,
                exe: &exe,
                spec: &e.common.spec,
                out: &r.out,
                shards: n,
                gpu: e.gpu,
                image: &e.image,
            };
            let text = match e.engine {
                Engine::Slurm => crate::sweep::emit::slurm(&job),
                Engine::K8s => crate::sweep::emit::k8s(&job),
                Engine::Ray => crate::sweep::emit::ray(&job),
            };
            match &e.output {
                Some(p) => crate::util::fs::write_atomic(p, text.as_bytes())?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Args::Run(a) => {
            if a.jobs == 0 {
                bail!("--jobs must be at least 1");
            }
            if let Some(g) = a.gpus.iter().find(|g| g.is_empty() || !g.chars().all(|c| c.is_ascii_digit())) {
                bail!("--gpus: `{g}` is not a GPU index");
            }
            let workers =
                if a.gpus.is_empty() { Workers::Processes(a.jobs) } else { Workers::Gpus(a.gpus.clone()) };
            let r = Resolved::new(&a.common)?;
            let mine = r.mine();
            let pending: Vec<&Cell> =
                mine.iter().copied().filter(|c| !exec::state(&r.out, c).is_done()).collect();
            let todo = exec::with_needs(&r.out, &r.cells, &pending);
            println!(
                "{} of {} cells to run ({} done) in {}",
                pending.len(),
                mine.len(),
                mine.len() - pending.len(),
                r.out.display()
            );
            if todo.len() > pending.len() {
                let extra: Vec<&str> = todo
                    .iter()
                    .filter(|c| !pending.iter().any(|p| p.id == c.id))
                    .map(|c| c.id.as_str())
                    .collect();
                println!("and the baselines their KL needs: {}", extra.join(", "));
            }
            let exe = std::env::current_exe().context("cannot find the llq-host executable")?;
            let report = |o: &Outcome| match &o.result {
                Ok(s) => println!("done    {} ({s:.1} s)", o.cell.id),
                Err(e) => {
                    println!("failed  {}: {}", o.cell.id, format!("{e:#}").lines().last().unwrap_or(""))
                }
            };
            let outcomes = exec::run(&exe, &r.out, &todo, &workers, &report)?;
            let failed: Vec<&str> =
                outcomes.iter().filter(|o| o.result.is_err()).map(|o| o.cell.id.as_str()).collect();
            if !failed.is_empty() {
                bail!(
                    "{} of {} cells failed ({}); each one's error is in {}/<cell>.failed.json",
                    failed.len(),
                    todo.len(),
                    failed.join(", "),
                    r.out.display()
                );
            }
            Ok(())
        }
    }
}
