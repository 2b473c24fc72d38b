//! `crius port-forward POD LOCAL:REMOTE...`: listens on 127.0.0.1:LOCAL and forwards every
//! connection to REMOTE inside the pod's network namespace, through the streaming server.

use k8s_cri::v1::PortForwardRequest;
use tokio::net::TcpListener;

use super::connect::{Client, Deadline};
use super::error::CliError;
use super::stream_client;

#[derive(clap::Args, Debug)]
pub struct PortForwardArgs {
    /// The pod sandbox id.
    pub pod: String,
    /// LOCAL:REMOTE pairs (or one PORT for both; LOCAL 0 picks a free port).
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
}

/// `LOCAL:REMOTE` or `PORT`.
pub fn parse_pair(s: &str) -> Result<(u16, u16), CliError> {
    let bad = || CliError::Usage(format!("invalid port pair {s:?} (LOCAL:REMOTE expected)"));
    let (l, r) = s.split_once(':').unwrap_or((s, s));
    let local: u16 = l.parse().map_err(|_| bad())?;
    let remote: u16 = r.parse().map_err(|_| bad())?;
    if remote == 0 {
        return Err(bad());
    }
    Ok((local, remote))
}

pub async fn port_forward(c: &Client, args: &PortForwardArgs) -> Result<(), CliError> {
    let pairs = args
        .ports
        .iter()
        .map(|p| parse_pair(p))
        .collect::<Result<Vec<_>, _>>()?;
    // Checked once up front, so a bad pod fails here rather than at the first connection.
    url_for(c, &args.pod, pairs[0].1).await?;
    let mut listeners = Vec::new();
    for (local, remote) in pairs {
        let l = TcpListener::bind((args.address.as_str(), local)).await?;
        println!(
            "Forwarding from {} -> {remote}",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        listeners.push((l, remote));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (l, remote) in listeners {
        let client = Client {
            runtime: c.runtime.clone(),
            image: c.image.clone(),
            timeout: None,
        };
        let pod = args.pod.clone();
        tasks.spawn(async move {
            loop {
                let Ok((sock, _)) = l.accept().await else {
                    continue;
                };
                println!("Handling connection for {remote}");
                // Every streaming URL is single-use: one per connection.
                let url = match url_for(&client, &pod, remote).await {
                    Ok(u) => u,
                    Err(e) => {
                        eprintln!("port-forward: {e}");
                        continue;
                    }
                };
                tokio::spawn(async move {
                    if let Err(e) = stream_client::forward_connection(&url, remote, sock).await {
                        eprintln!("port-forward {remote}: {e}");
                    }
                });
            }
        });
    }
    tokio::select! {
        _ = tasks.join_next() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

async fn url_for(c: &Client, pod: &str, port: u16) -> Result<String, CliError> {
    let resp = c
        .call(
            "PortForward",
            Deadline::Normal,
            c.runtime.clone().port_forward(PortForwardRequest {
                pod_sandbox_id: pod.to_owned(),
                port: vec![port as i32],
            }),
        )
        .await?;
    Ok(resp.url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse() {
        assert_eq!(parse_pair("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_pair("80").unwrap(), (80, 80));
        assert_eq!(parse_pair("0:80").unwrap(), (0, 80));
        assert!(parse_pair("80:0").is_err());
        assert!(parse_pair("x:80").is_err());
    }
}
