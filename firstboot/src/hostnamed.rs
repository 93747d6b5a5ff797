//! Hostname through systemd-hostnamed (`org.freedesktop.hostname1`) on the
//! D-Bus system bus, with zbus.

use std::path::Path;

use anyhow::{Context, Result};
use zbus::blocking::Connection;

use crate::runner::HostnameState;

/// Standard system bus socket.
const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

#[zbus::proxy(
    interface = "org.freedesktop.hostname1",
    default_service = "org.freedesktop.hostname1",
    default_path = "/org/freedesktop/hostname1",
    gen_async = false,
    blocking_name = "Hostname1ProxyBlocking"
)]
trait Hostname1 {
    /// Sets the static hostname (`/etc/hostname`).
    fn set_static_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    /// Sets the transient (kernel) hostname.
    fn set_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    /// The static hostname.
    #[zbus(property)]
    fn static_hostname(&self) -> zbus::Result<String>;
    /// The transient hostname.
    #[zbus(property)]
    fn hostname(&self) -> zbus::Result<String>;
}

/// The system bus address to use: `explicit`, else `DBUS_SYSTEM_BUS_ADDRESS`,
/// else the standard socket when it exists; `None` when there is no bus.
pub fn system_bus_address(explicit: Option<&str>) -> Option<String> {
    if let Some(a) = explicit {
        return Some(a.to_string());
    }
    if let Ok(a) = std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        if !a.is_empty() {
            return Some(a);
        }
    }
    Path::new(SYSTEM_BUS_SOCKET)
        .exists()
        .then(|| format!("unix:path={SYSTEM_BUS_SOCKET}"))
}

fn proxy(address: &str) -> Result<(Connection, Hostname1ProxyBlocking<'static>)> {
    let conn = zbus::blocking::connection::Builder::address(address)
        .with_context(|| format!("bad D-Bus address {address}"))?
        .build()
        .with_context(|| format!("connecting to the system bus at {address}"))?;
    let proxy = Hostname1ProxyBlocking::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .context("creating the org.freedesktop.hostname1 proxy")?;
    Ok((conn, proxy))
}

/// Sets static and transient hostname through hostnamed at `address`.
pub fn set_hostname(address: &str, name: &str) -> Result<()> {
    let (_conn, p) = proxy(address)?;
    p.set_static_hostname(name, false)
        .context("org.freedesktop.hostname1.SetStaticHostname")?;
    p.set_hostname(name, false)
        .context("org.freedesktop.hostname1.SetHostname")?;
    Ok(())
}

/// Reads static and transient hostname from hostnamed at `address`.
pub fn query(address: &str) -> Result<HostnameState> {
    let (_conn, p) = proxy(address)?;
    Ok(HostnameState {
        static_name: p.static_hostname().context("reading StaticHostname")?,
        transient: p.hostname().context("reading Hostname")?,
    })
}
