//! langbench-replay: replays captured LLM-server streams (Ollama /api, OpenAI /v1) on an absolute
//! schedule at any rate, every chunk stamped with its CLOCK_MONOTONIC send time (agents/replay/README.md).
mod http;
mod json;
mod load;
mod plan;
mod profile;
mod sched;
mod state;
mod stats;
mod stream;

use clap::Parser;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};

#[derive(Parser, Debug)]
#[command(name = "langbench-replay", version, about = "Replay captured LLM-server streams at any rate, every chunk stamped with its send time")]
struct Args {
    /// The profile (`python -m langbench profile RUN` writes it)
    #[arg(long, required_unless_present = "bench_client")]
    profile: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0: a free port (the listening line says which)
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Bind a --host that is not loopback
    #[arg(long)]
    allow_remote: bool,
    /// k: every stream k times faster than captured
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// ideal: the lowest captured concurrency's timing whatever the load; profile: the captured level nearest the streams in flight
    #[arg(long, default_value = "ideal", value_parser = ["ideal", "profile"])]
    load: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shares of requests per fault kind, JSON: {"disconnect": 0.02, "stall": 0.01, ...}
    #[arg(long)]
    faults: Option<String>,
    /// How long a stall fault sends nothing before it closes
    #[arg(long, default_value_t = 3600.0)]
    stall_s: f64,
    /// One JSON line per finished stream: its lateness, donor, fault and end
    #[arg(long)]
    lateness_out: Option<String>,
    /// Bench mode: a load generator against the replay server at this URL (bench/replay_ceiling.py)
    #[arg(long, hide = true)]
    bench_client: Option<String>,
    #[command(flatten)]
    load_args: load::LoadArgs,
}

fn die(msg: &str) -> ! {
    eprintln!("langbench-replay: {msg}");
    std::process::exit(2);
}

fn main() {
    let args = Args::parse();
    if let Some(url) = &args.bench_client {
        std::process::exit(load::main(url, &args.load_args));
    }
    let ip: IpAddr = match args.host.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h.parse().unwrap_or_else(|_| die(&format!("--host {h:?} is not an IP address"))),
    };
    if !ip.is_loopback() && !args.allow_remote {
        die(&format!("refusing to listen on {ip}: the replay server binds loopback only (pass --allow-remote to override)"));
    }
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        die(&format!("--time-scale must be a positive number, not {}", args.time_scale));
    }
    if !(args.stall_s.is_finite() && args.stall_s >= 0.0) {
        die(&format!("--stall-s must be a number of seconds >= 0, not {}", args.stall_s));
    }
    let faults = match &args.faults {
        Some(f) => plan::parse_faults(f).unwrap_or_else(|e| die(&e)),
        None => [0.0; 6],
    };
    let profile = profile::load(args.profile.as_deref().unwrap()).unwrap_or_else(|e| die(&e));
    let lateness = args.lateness_out.as_ref().map(|p| {
        let f = std::fs::File::create(p).unwrap_or_else(|e| die(&format!("cannot write --lateness-out {p}: {e}")));
        std::io::BufWriter::with_capacity(1 << 16, f)
    });
    state::CONFIG.set(state::Config {
        profile,
        time_scale: args.time_scale,
        load: if args.load == "profile" { plan::Load::Profile } else { plan::Load::Ideal },
        seed: args.seed,
        faults,
        stall_ns: (args.stall_s * 1e9) as u64,
    }).ok().unwrap();
    state::with(|c| c.lateness = lateness);

    // One core: the bench and the studies pin the server to one CPU.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| die(&format!("cannot start tokio: {e}")));
    rt.block_on(serve(SocketAddr::new(ip, args.port)));
}

async fn serve(addr: SocketAddr) {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .unwrap_or_else(|e| die(&format!("cannot open a socket: {e}")));
    let _ = socket.set_reuseaddr(true);
    socket.bind(addr).unwrap_or_else(|e| die(&format!("cannot bind {addr}: {e}")));
    let listener = socket.listen(4096).unwrap_or_else(|e| die(&format!("cannot listen on {addr}: {e}")));
    let local = listener.local_addr().unwrap();
    tokio::spawn(sched::start().unwrap_or_else(|e| die(&format!("cannot create the timerfd: {e}"))));
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tick.tick().await;
            state::flush_lateness();
        }
    });
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).unwrap();
        let mut int = signal(SignalKind::interrupt()).unwrap();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        state::flush_lateness();
        std::process::exit(0);
    });
    let host = match local.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "langbench-replay listening on http://{host}:{}", local.port());
        let _ = out.flush();
    }
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("langbench-replay: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(sock), hyper::service::service_fn(http::handle));
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
