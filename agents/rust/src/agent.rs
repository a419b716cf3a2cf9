//! The agent loop (DESIGN.md, "Agent loops"): send, parse, act, append, until finish or
//! max_turns, on the one persistent client. The tools and the bookkeeping are in src/tools.rs.
use crate::client::{self, CLIENT};
use crate::jobs::{Job, Jobs};
use crate::record::Record;
use crate::tools::Task;
use crate::Error;
use std::time::Duration;

/// One task; each turn's record goes to `write` as soon as the turn ends.
pub async fn run_task(
    http: &reqwest::Client,
    base: &str,
    jobs: &Jobs,
    job: &Job,
    mut write: impl FnMut(Record) -> Result<(), Error>,
) -> Result<(), Error> {
    let name = if crate::openai::is_v1(jobs) { crate::openai::CLIENT } else { CLIENT };
    let mut task = Task::new(jobs, job, name);
    while !task.over {
        let x = client::exchange(http, base, jobs, job, Some(&task)).await;
        task.before_send(x.t0);
        let wait_ms = task.act(x.text(), x.tool_calls(), x.failure().as_ref(), x.t_last(), jobs.timeout_s);
        if wait_ms > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait_ms / 1e3)).await;
        }
        task.after_tool();
        let mut rec = client::record(x, jobs, job);
        rec.turn = Some(task.fields());
        write(rec)?;
        task.after_record();
    }
    Ok(())
}
