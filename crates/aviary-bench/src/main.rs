//! The `aviary-bench` binary: parses the command line and runs a scenario or a comparison.

use std::process::ExitCode;

use anyhow::Context as _;
use aviary_bench::cli::{Cli, Command, IdleWorkerArgs, RunArgs};
use aviary_bench::{compare, scenario};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Matrix(args) => compare::matrix(&args).map(|table| {
            print!("{table}");
            true
        }),
        Command::IdleWorker(args) => idle_worker(&args).map(|()| true),
        Command::Compare(args) => compare::run(&args).map(|comparison| {
            if args.json {
                match serde_json::to_string_pretty(&comparison) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("aviary-bench: {e}"),
                }
            } else {
                print!("{}", comparison.table());
            }
            true
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("aviary-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One scenario against one broker; `Ok(false)` when the run's verdict is not OK.
fn run(args: &RunArgs) -> anyhow::Result<bool> {
    let mut options = args
        .scenario
        .options(args.broker, args.broker_pid, &args.label);
    options.tls_ca = args.tls_ca.clone();
    let runtime = if args.scenario.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.scenario.threads)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    let hard_timeout = args.scenario.hard_timeout();
    let report = runtime
        .block_on(async { tokio::time::timeout(hard_timeout, scenario::run(&options)).await })
        .map_err(|_| anyhow::anyhow!("run exceeded its hard timeout of {hard_timeout:?}"))??;
    // Client tasks still blocked on a dead broker are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(report.ok)
}

/// One process of a multi-process idle run.
fn idle_worker(args: &IdleWorkerArgs) -> anyhow::Result<()> {
    let options = args.options();
    let hold_limit = std::time::Duration::try_from_secs_f64(args.hold_limit).unwrap_or_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(scenario::connections::idle_worker(
            &options,
            args.first_index,
            hold_limit,
        ))
}
