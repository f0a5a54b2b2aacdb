//! rdmaq-agent: one RDMA node's enforcement point. Loads the eBPF monitor, admits local
//! requests from the node's allotment and reports use to the coordinator.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The eBPF object built by build.rs, embedded so the agent is one file to deploy.
static EBPF_OBJECT: &[u8] = include_bytes!(env!("RDMAQ_EBPF_OBJECT"));

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Node agent of rdmaq: eBPF monitor, local admission, allotments from the coordinator.
#[derive(Debug, Parser)]
#[command(name = "rdmaq-agent", version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "RDMAQ_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// This node's name (defaults to the host name).
    #[arg(long, env = "RDMAQ_NODE")]
    node: Option<String>,
    /// Coordinator members, comma separated. None: standalone mode.
    #[arg(long, env = "RDMAQ_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Unix socket the intercept library connects to.
    #[arg(
        long,
        env = "RDMAQ_AGENT_SOCKET",
        default_value = "/run/rdmaq/agent.sock"
    )]
    socket: PathBuf,
    /// Log output format.
    #[arg(long, value_enum, default_value = "text", env = "RDMAQ_LOG_FORMAT")]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let subscriber = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    match args.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    tracing::info!(
        ?args,
        ebpf_object_bytes = EBPF_OBJECT.len(),
        "rdmaq-agent starting"
    );
    anyhow::bail!("the agent service is not implemented yet (issue 5)")
}

#[cfg(test)]
mod tests {
    use super::EBPF_OBJECT;

    #[test]
    fn embedded_object_is_an_ebpf_elf() {
        assert_eq!(&EBPF_OBJECT[..4], b"\x7fELF", "not an ELF file");
        // e_machine (offset 18, little endian) is EM_BPF = 247.
        assert_eq!(u16::from_le_bytes([EBPF_OBJECT[18], EBPF_OBJECT[19]]), 247);
    }
}
