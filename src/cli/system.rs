//! `crius version` and `crius info`: who answers on the socket and how it is doing.

use k8s_cri::v1::{StatusRequest, VersionRequest};
use serde_json::{Value, json};

use super::connect::{Client, Deadline};
use super::error::CliError;
use super::output;

pub async fn version(c: &Client) -> Result<(), CliError> {
    let v = c
        .call(
            "Version",
            Deadline::Normal,
            c.runtime.clone().version(VersionRequest {
                version: String::new(),
            }),
        )
        .await?;
    println!("Version:  {}", v.version);
    println!("RuntimeName:  {}", v.runtime_name);
    println!("RuntimeVersion:  {}", v.runtime_version);
    println!("RuntimeApiVersion:  {}", v.runtime_api_version);
    Ok(())
}

/// The runtime's Status with its verbose info merged in at the top level, as crictl prints it.
pub async fn info(c: &Client) -> Result<(), CliError> {
    let resp = c
        .call(
            "Status",
            Deadline::Normal,
            c.runtime.clone().status(StatusRequest { verbose: true }),
        )
        .await?;
    let mut doc = serde_json::Map::new();
    doc.insert("status".into(), json!(resp.status));
    for (k, v) in output::info_json(&resp.info) {
        doc.entry(k).or_insert(v);
    }
    output::print_json(&Value::Object(doc))
}
