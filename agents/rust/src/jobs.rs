//! The jobs file (lib/langbench/schemas/jobs.schema.json), read strictly.
use crate::Error;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jobs {
    pub schema_version: u32,
    pub model: String,
    pub prompts: Vec<String>,
    #[serde(default)]
    pub raw: bool,
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    pub runs: Vec<Job>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub run_id: String,
    pub prompt: usize,
    /// Sent to Ollama exactly as given: an absent option and a set one reload differently.
    pub options: Map<String, Value>,
    pub keep_alive: Value,
    pub warmup: bool,
}

fn default_timeout() -> f64 {
    600.0
}

pub fn load(path: &Path) -> Result<Jobs, Error> {
    let p = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| Error::BadJobs(format!("{p}: cannot read jobs file: {e}")))?;
    // serde_path_to_error names the field: "runs[0].prompt: invalid type: ..."
    let de = &mut serde_json::Deserializer::from_str(&text);
    let jobs: Jobs = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if field == "." {
            Error::BadJobs(format!("{p}: {inner}"))
        } else {
            Error::BadJobs(format!("{p}: field '{field}': {inner}"))
        }
    })?;
    if jobs.schema_version != 1 {
        return Err(Error::BadJobs(format!("{p}: field 'schema_version' must be 1")));
    }
    if jobs.model.is_empty() {
        return Err(Error::BadJobs(format!("{p}: field 'model' must be a non-empty string")));
    }
    if jobs.prompts.is_empty() || jobs.prompts.iter().any(|s| s.is_empty()) {
        return Err(Error::BadJobs(format!("{p}: field 'prompts' must be a non-empty list of non-empty strings")));
    }
    if jobs.runs.is_empty() {
        return Err(Error::BadJobs(format!("{p}: field 'runs' is empty")));
    }
    if !(jobs.timeout_s > 0.0) {
        return Err(Error::BadJobs(format!("{p}: field 'timeout_s' must be > 0")));
    }
    for (i, run) in jobs.runs.iter().enumerate() {
        if run.run_id.is_empty() {
            return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].run_id' must be a non-empty string")));
        }
        if run.prompt >= jobs.prompts.len() {
            return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].prompt' is out of range")));
        }
        if !(run.keep_alive.is_i64() || run.keep_alive.is_u64() || run.keep_alive.is_string()) {
            return Err(Error::BadJobs(format!("{p}: field 'runs[{i}].keep_alive' must be int/str")));
        }
    }
    Ok(jobs)
}
