//! The command line: parse arguments, load the config, call into the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use anyhow::Context;
use funnelfix::commands;
use funnelfix::config::{self, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(
    name = "funnelfix",
    version,
    about = "Improves a PostHog funnel one reviewed pull request at a time"
)]
struct Cli {
    /// Config file.
    #[arg(short, long, global = true, env = "FUNNELFIX_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: its schedules and Telegram polling, until SIGTERM or SIGINT.
    Run,
    /// One propose pass and one monitor pass now, then exit.
    Once {
        /// Write nothing anywhere; print what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print each funnel: step counts, rates with intervals, and the step it would pick.
    Funnel {
        /// Only this funnel.
        #[arg(long)]
        funnel: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// What PostHog says about why people stop at the step it would pick.
    Evidence {
        /// Only this funnel.
        #[arg(long)]
        funnel: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Experiments from the state database; with a number, that experiment.
    Status {
        /// One experiment, by its number ("3" or "#3").
        experiment: Option<String>,
        /// Write the experiment's watch chart (PNG) to this file.
        #[arg(long, value_name = "FILE", requires = "experiment")]
        chart: Option<PathBuf>,
    },
    /// Validate the config file and the environment; exit 1 listing every problem.
    CheckConfig,
    /// The whole loop against built-in simulated services; no credentials needed.
    Demo {
        /// Ask at the terminal before each approval instead of approving automatically.
        #[arg(long)]
        interactive: bool,
        /// Keep the demo's state here instead of a temporary directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Exit 0 if the daemon on this config's database is alive (for container health checks).
    Health,
    /// Write a draft config (to -c) from a saved PostHog funnel. Reads
    /// POSTHOG_API_KEY and GITHUB_TOKEN.
    Init {
        /// The saved funnel: its id or short id (asked at a terminal when there are several).
        #[arg(long)]
        insight: Option<String>,
        /// Overwrite the config file if it exists.
        #[arg(long)]
        force: bool,
        /// PostHog's address.
        #[arg(long, default_value = "https://us.posthog.com")]
        posthog_host: String,
        /// The PostHog project id (Project settings → Project ID).
        #[arg(long)]
        project_id: String,
        /// The site's repository, owner/name.
        #[arg(long)]
        repo: String,
        /// The branch the site is built from.
        #[arg(long, default_value = "main")]
        base_branch: String,
        /// GitHub's API (GitHub Enterprise: https://HOST/api/v3).
        #[arg(long, default_value = "https://api.github.com")]
        github_api_url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; its logs would only repeat the story.
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "funnelfix=info,warn",
    };
    init_logging(cli.log_format, default_filter);
    match try_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only for a person at a terminal, not in `docker logs` or a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn try_main(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::CheckConfig = cli.command {
        return Ok(check_config(&cli.config));
    }
    if let Command::Demo {
        interactive,
        state_dir,
    } = cli.command
    {
        let runtime = runtime()?;
        let opts = funnelfix::demo::DemoOptions {
            interactive,
            state_dir,
        };
        runtime.block_on(funnelfix::demo::run(opts))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Init {
        insight,
        force,
        posthog_host,
        project_id,
        repo,
        base_branch,
        github_api_url,
    } = cli.command
    {
        let runtime = runtime()?;
        let opts = commands::InitOptions {
            config: cli.config,
            insight,
            force,
            posthog_host,
            project_id,
            github_api_url,
            repo,
            base_branch,
        };
        return runtime.block_on(commands::init(opts));
    }
    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = runtime()?;
    match cli.command {
        Command::Funnel { funnel, json } => {
            runtime.block_on(commands::funnel(&config, funnel.as_deref(), json))
        }
        Command::Evidence { funnel, json } => {
            runtime.block_on(commands::evidence(&config, funnel.as_deref(), json))
        }
        Command::Status { experiment, chart } => match experiment {
            Some(n) => commands::experiment_status(&config, &n, chart.as_deref()),
            None => commands::status(&config),
        },
        Command::Health => commands::health(&config),
        Command::Once { dry_run } => runtime.block_on(commands::once(config, dry_run)),
        Command::Run => runtime.block_on(commands::run(config)),
        Command::CheckConfig | Command::Demo { .. } | Command::Init { .. } => {
            unreachable!("handled above")
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Every problem in the file and the environment, one per line; exit 1 if any.
fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(problems) = config::Secrets::from_env(&config) {
        for p in problems {
            eprintln!("{}: {p}", path.display());
        }
        return ExitCode::FAILURE;
    }
    println!(
        "{}: ok ({} funnel(s), state in {})",
        path.display(),
        config.funnels.len(),
        config.state.path.display()
    );
    ExitCode::SUCCESS
}
