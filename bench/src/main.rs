use std::process::ExitCode;

use clap::Parser;
use ferrocd_bench::cli::{Cli, Command};
use ferrocd_bench::conn::Pool;
use ferrocd_bench::{compare, report::Summary};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrocd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let (Some(ca), Some(cert), Some(key)) =
        (&cli.common.cacert, &cli.common.cert, &cli.common.key)
    {
        ferrocd_bench::conn::use_tls(ca, cert, key)?;
    }
    if let Command::Compare(args) = &cli.command {
        return compare::run(&cli.common, args).await;
    }
    let (name, workload) = cli.command.workload().expect("not compare");
    let c = &cli.common;
    let pool = Pool::connect(&c.endpoints, c.conns, c.target_leader).await?;
    let summary = workload.run(name, &c.run_opts(), &pool).await?;
    print(&summary, c.json)
}

fn print(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}
