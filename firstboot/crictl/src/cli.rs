//! Command-line interface: crictl's global flags and the subcommands this
//! crictl implements, with crictl's names, aliases and defaults. Global
//! flags come before the subcommand, as with crictl.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "crictl",
    about = "client for CRI (nodebake-crictl: the CRI v1 commands kubeadm and operators use)",
    disable_version_flag = true
)]
pub struct Cli {
    /// Flags shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalFlags,
    /// The subcommand; none prints the help.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses argv. On `--help` the help is printed and `Err(0)` returned;
    /// on a usage error the error is printed and `Err(1)` returned (crictl
    /// exits 1 on bad flags).
    pub fn parse_from_args(args: impl IntoIterator<Item = OsString>) -> Result<Self, ExitCode> {
        Self::try_parse_from(args).map_err(|e| {
            let _ = e.print();
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        })
    }
}

/// Prints the help of subcommand `name` (crictl does that, and exits 0,
/// when a subcommand that needs IDs gets none).
pub fn print_subcommand_help(name: &str) {
    let mut command = Cli::command();
    command.build();
    if let Some(sub) = command.find_subcommand_mut(name) {
        let _ = sub.print_help();
    }
}

/// Prints the top-level help.
pub fn print_help() {
    let _ = Cli::command().print_help();
}

/// crictl's global flags. Each one overrides its environment variable,
/// which overrides the config file (see [`crate::settings`]).
#[derive(Debug, Default, Args)]
pub struct GlobalFlags {
    /// Location of the client config file [env: CRI_CONFIG_FILE] (default:
    /// /etc/crictl.yaml, else crictl.yaml next to this binary)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Endpoint of the CRI runtime service, unix:///path or /path
    /// [env: CONTAINER_RUNTIME_ENDPOINT] (default:
    /// unix:///run/containerd/containerd.sock)
    #[arg(short = 'r', long = "runtime-endpoint", value_name = "ENDPOINT")]
    pub runtime_endpoint: Option<String>,
    /// Endpoint of the CRI image service [env: IMAGE_SERVICE_ENDPOINT]
    /// (default: the runtime endpoint)
    #[arg(short = 'i', long = "image-endpoint", value_name = "ENDPOINT")]
    pub image_endpoint: Option<String>,
    /// Timeout of connecting and of each call, e.g. 2s, 20s; 0 or less
    /// means the default (10s; a pull gets at least 10m)
    #[arg(short = 't', long = "timeout", value_name = "DURATION", value_parser = parse_go_duration)]
    pub timeout: Option<Duration>,
    /// Enable debug output (requests and responses on stderr); -D=false
    /// disables it
    #[arg(
        short = 'D',
        long = "debug",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = parse_go_bool
    )]
    pub debug: Option<bool>,
    /// Print the version of this crictl
    #[arg(short = 'v', long = "version")]
    pub version: bool,
}

/// The subcommands, named as in crictl.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Display information of the container runtime
    Info(InfoArgs),
    /// List pods
    Pods(PodsArgs),
    /// Stop one or more running pods
    Stopp(StoppArgs),
    /// Remove one or more pods
    Rmp(RmpArgs),
    /// Pull an image from a registry
    Pull(PullArgs),
    /// Return the status of one or more images
    Inspecti(InspectiArgs),
    /// List images
    #[command(visible_aliases = ["image", "img"])]
    Images(ImagesArgs),
    /// List containers
    Ps(PsArgs),
    /// Display runtime version information
    Version,
}

/// `crictl info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format, one of: json|yaml|go-template
    #[arg(short = 'o', long = "output", default_value = "json")]
    pub output: String,
    /// Do not show verbose information
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The template used with -o go-template; only {{.path.to.field}}
    /// actions are supported
    #[arg(long = "template", default_value = "")]
    pub template: String,
}

/// `crictl pods`.
#[derive(Debug, Args)]
pub struct PodsArgs {
    /// Filter by pod id
    #[arg(long = "id")]
    pub id: Option<String>,
    /// Filter by pod state (ready or notready)
    #[arg(short = 's', long = "state")]
    pub state: Option<String>,
    /// Filter by key=value label
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Show verbose info for pods
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// List only pod IDs
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Output format, one of: json|yaml|table
    #[arg(short = 'o', long = "output", default_value = "table")]
    pub output: String,
    /// Show the most recently created pod
    #[arg(short = 'l', long = "latest")]
    pub latest: bool,
    /// Show last n recently created pods; 0 for unlimited
    #[arg(short = 'n', long = "last", default_value_t = 0)]
    pub last: usize,
    /// Show output without truncating the ID
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

/// `crictl stopp`.
#[derive(Debug, Args)]
pub struct StoppArgs {
    /// POD-ID [POD-ID...]
    #[arg(value_name = "POD-ID")]
    pub ids: Vec<String>,
}

/// `crictl rmp`.
#[derive(Debug, Args)]
pub struct RmpArgs {
    /// POD-ID [POD-ID...]
    #[arg(value_name = "POD-ID")]
    pub ids: Vec<String>,
    /// Force removal of the pod sandbox, disregarding if running
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Remove all pods
    #[arg(short = 'a', long = "all")]
    pub all: bool,
}

/// `crictl pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image to pull: a name, with a tag or a digest
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub image: Option<String>,
    /// Use a user name and an optional password (`USER:PASSWORD`) for
    /// accessing the registry (env: CRICTL_CREDS)
    #[arg(long = "creds", value_name = "USERNAME[:PASSWORD]")]
    pub creds: Option<String>,
    /// Use AUTH_STRING (base64 of `USER:PASSWORD`) for accessing the
    /// registry (env: CRICTL_AUTH)
    #[arg(long = "auth", value_name = "AUTH_STRING")]
    pub auth: Option<String>,
}

/// `crictl inspecti`.
#[derive(Debug, Args)]
pub struct InspectiArgs {
    /// IMAGE-ID [IMAGE-ID...]
    #[arg(value_name = "IMAGE-ID")]
    pub ids: Vec<String>,
    /// Output format, one of: json|yaml|go-template|table
    #[arg(short = 'o', long = "output", default_value = "json")]
    pub output: String,
    /// Do not show verbose information
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The template used with -o go-template; only {{.path.to.field}}
    /// actions are supported
    #[arg(long = "template", default_value = "")]
    pub template: String,
}

/// `crictl images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only list images matching this repository, with an optional tag
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub filter: Option<String>,
    /// Show verbose info for images
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Only show image IDs
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Output format, one of: json|yaml|table
    #[arg(short = 'o', long = "output", default_value = "table")]
    pub output: String,
    /// Show digests
    #[arg(long = "digests")]
    pub digests: bool,
    /// Show output without truncating the ID
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

/// `crictl ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Filter by container id
    #[arg(long = "id")]
    pub id: Option<String>,
    /// Filter by pod id
    #[arg(short = 'p', long = "pod")]
    pub pod: Option<String>,
    /// Filter by container state (created, running, exited or unknown)
    #[arg(short = 's', long = "state")]
    pub state: Option<String>,
    /// Filter by key=value label
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Show verbose information for containers
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Only display container IDs
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Output format, one of: json|yaml|table
    #[arg(short = 'o', long = "output", default_value = "table")]
    pub output: String,
    /// Show all containers
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// Show the most recently created container (includes all states)
    #[arg(short = 'l', long = "latest")]
    pub latest: bool,
    /// Show last n recently created containers (includes all states); 0
    /// for unlimited
    #[arg(short = 'n', long = "last", default_value_t = 0)]
    pub last: usize,
    /// Show output without truncating the ID
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

/// Parses a boolean as Go's `strconv.ParseBool` does (crictl's flags are
/// Go flags: `-D=false`, `--debug=0`).
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {s:?}")),
    }
}

/// Parses a duration as Go's `time.ParseDuration` does (`2s`, `1m30s`,
/// `500ms`, `1.5h`); a bare number is taken as seconds, as in
/// `/etc/crictl.yaml`. Negative durations parse as zero (crictl: "0 or
/// less is set to default").
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?} (use e.g. 2s, 500ms, 1m30s)");
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = body.parse::<f64>() {
        return Ok(non_negative(negative, seconds));
    }
    let mut total = 0.0;
    let mut rest = body;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += number * unit_seconds(&rest[..unit_len]).ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    Ok(non_negative(negative, total))
}

/// Seconds in one Go duration unit.
fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1e-9,
        "us" | "µs" | "μs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    })
}

/// `seconds` as a duration, zero when negative.
fn non_negative(negative: bool, seconds: f64) -> Duration {
    if negative || !seconds.is_finite() {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args.iter().map(OsString::from)).expect("parses")
    }

    #[test]
    fn parses_the_kubeadm_command_lines() {
        let sock = "unix:///run/containerd/containerd.sock";
        let cli = parse(&[
            "crictl",
            "-r",
            sock,
            "-i",
            sock,
            "-D=false",
            "info",
            "-o",
            "go-template",
            "--template",
            "{{.config.sandboxImage}}",
        ]);
        assert_eq!(cli.global.runtime_endpoint.as_deref(), Some(sock));
        assert_eq!(cli.global.image_endpoint.as_deref(), Some(sock));
        assert_eq!(cli.global.debug, Some(false));
        let Some(Command::Info(info)) = cli.command else {
            panic!("not info")
        };
        assert_eq!(info.output, "go-template");
        assert_eq!(info.template, "{{.config.sandboxImage}}");

        let cli = parse(&["crictl", "-r", sock, "-D=false", "pods", "-q"]);
        assert!(matches!(
            cli.command,
            Some(Command::Pods(PodsArgs { quiet: true, .. }))
        ));
        let cli = parse(&["crictl", "-r", sock, "stopp", "abc", "def"]);
        assert!(
            matches!(cli.command, Some(Command::Stopp(StoppArgs { ref ids }) ) if ids.len() == 2)
        );
        let cli = parse(&["crictl", "--debug", "rmp", "abc"]);
        assert_eq!(cli.global.debug, Some(true));
        let cli = parse(&["crictl", "-D", "img", "-q"]);
        assert_eq!(cli.global.debug, Some(true));
        assert!(matches!(
            cli.command,
            Some(Command::Images(ImagesArgs { quiet: true, .. }))
        ));
    }

    #[test]
    fn parses_go_durations_and_bools() {
        assert_eq!(parse_go_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("-1s"), Ok(Duration::ZERO));
        assert!(parse_go_duration("10 apples").is_err());
        assert!(parse_go_duration("s").is_err());
        assert_eq!(parse_go_bool("False"), Ok(false));
        assert!(parse_go_bool("no").is_err());
    }
}
