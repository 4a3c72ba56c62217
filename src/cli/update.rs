//! `tcp-redirs update PORT --namespace NS [--udp] --idle-timeout 600 …`: change a
//! redirection's settings in place. The port, its application and its open connections
//! stay; new connections get the new settings on every node when the command returns.

use anyhow::Result;

use super::{print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};
use crate::client::Failure;
use crate::wire::{Protocol, RedirSettings, SettingsPatch};

/// A setting `--unset` takes back to the namespace's (its flag's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Setting {
    /// --connect-timeout
    ConnectTimeout,
    /// --idle-timeout
    IdleTimeout,
    /// --half-close-timeout
    HalfCloseTimeout,
    /// --max-connections
    MaxConnections,
    /// --max-connections-per-second
    MaxConnectionsPerSecond,
    /// --max-datagrams-per-second (UDP)
    MaxDatagramsPerSecond,
    /// --max-connections-per-client
    MaxConnectionsPerClient,
    /// --max-connections-per-second-per-client
    MaxConnectionsPerSecondPerClient,
    /// --bandwidth-limit (TCP)
    BandwidthLimit,
    /// --proxy-protocol (off)
    ProxyProtocol,
    /// every --allow (everyone may connect)
    Allow,
    /// every --deny
    Deny,
}

/// The options of `update`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The public port whose settings change.
    #[arg(value_parser = clap::value_parser!(u16).range(1..), add = super::complete::ports())]
    port: u16,
    /// The namespace the port belongs to.
    #[arg(long, value_name = "NS", add = super::complete::namespaces())]
    namespace: String,
    /// The port is a UDP redirection's (TCP's and UDP's ports are separate).
    #[arg(long)]
    udp: bool,
    /// Take a setting back to the namespace's default (repeat for several); `--allow` and
    /// `--deny` given here replace their whole list.
    #[arg(long, value_name = "SETTING", value_enum)]
    unset: Vec<Setting>,
    #[command(flatten)]
    settings: RedirSettings,
    #[command(flatten)]
    pub(super) app: AppArgs,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

/// The change the flags ask for; a usage error when one setting is both set and unset, or
/// when nothing is asked.
fn patch(settings: &RedirSettings, unset: &[Setting]) -> Result<SettingsPatch, String> {
    let set = |v: Option<u64>| v.map(Some);
    let set32 = |v: Option<u32>| v.map(Some);
    let mut patch = SettingsPatch {
        connect_timeout: set(settings.connect_timeout),
        idle_timeout: set(settings.idle_timeout),
        half_close_timeout: set(settings.half_close_timeout),
        max_connections: set32(settings.max_connections),
        max_connections_per_second: set32(settings.max_connections_per_second),
        max_datagrams_per_second: set32(settings.max_datagrams_per_second),
        max_connections_per_client: set32(settings.max_connections_per_client),
        max_connections_per_second_per_client: set32(settings.max_connections_per_second_per_client),
        bandwidth_limit: set(settings.bandwidth_limit),
        proxy_protocol: settings.proxy_protocol.map(Some),
        allow: (!settings.allow.is_empty()).then(|| settings.allow.clone()),
        deny: (!settings.deny.is_empty()).then(|| settings.deny.clone()),
    };
    for setting in unset {
        let taken = match setting {
            Setting::ConnectTimeout => patch.connect_timeout.replace(None).is_some(),
            Setting::IdleTimeout => patch.idle_timeout.replace(None).is_some(),
            Setting::HalfCloseTimeout => patch.half_close_timeout.replace(None).is_some(),
            Setting::MaxConnections => patch.max_connections.replace(None).is_some(),
            Setting::MaxConnectionsPerSecond => patch.max_connections_per_second.replace(None).is_some(),
            Setting::MaxDatagramsPerSecond => patch.max_datagrams_per_second.replace(None).is_some(),
            Setting::MaxConnectionsPerClient => patch.max_connections_per_client.replace(None).is_some(),
            Setting::MaxConnectionsPerSecondPerClient => {
                patch.max_connections_per_second_per_client.replace(None).is_some()
            }
            Setting::BandwidthLimit => patch.bandwidth_limit.replace(None).is_some(),
            Setting::ProxyProtocol => patch.proxy_protocol.replace(None).is_some(),
            Setting::Allow => patch.allow.replace(Vec::new()).is_some(),
            Setting::Deny => patch.deny.replace(Vec::new()).is_some(),
        };
        if taken {
            return Err(super::set_and_unset(setting));
        }
    }
    if patch.is_empty() {
        return Err(
            "nothing to change: give the settings to change (such as --idle-timeout 600) or --unset SETTING"
                .into(),
        );
    }
    Ok(patch)
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let patch = patch(&args.settings, &args.unset).map_err(|message| Failure::Usage.with(message))?;
    let client = conn.client()?;
    let app = args.app.resolve(&client).await?;
    let protocol = if args.udp { Protocol::Udp } else { Protocol::Tcp };
    let redir = client.update_redirection(&app, protocol, args.port, &args.namespace, &patch).await?;
    match args.format.get() {
        Format::Json => print_json(&redir),
        Format::Human => print_text(format!(
            "Successfully updated {protocol} redirection on port {}: {}",
            redir.port,
            super::list::settings_line(&redir)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_make_the_change_and_refuse_opposites() {
        let settings = RedirSettings { idle_timeout: Some(600), ..RedirSettings::default() };
        let p = patch(&settings, &[Setting::Allow, Setting::MaxConnections]).unwrap();
        assert_eq!(p.idle_timeout, Some(Some(600)));
        assert_eq!(p.allow, Some(vec![]));
        assert_eq!(p.max_connections, Some(None));
        assert_eq!(p.connect_timeout, None);
        let err = patch(&settings, &[Setting::IdleTimeout]).unwrap_err();
        assert!(err.contains("--idle-timeout and --unset idle-timeout"), "{err}");
        assert!(patch(&RedirSettings::default(), &[]).unwrap_err().starts_with("nothing to change"));
    }
}
