//! The overlay address on the node's interface, over rtnetlink: add, remove and verify,
//! IPv4 and IPv6, with prefix length and (IPv4) label, all idempotent so the controller can
//! repeat any of them after a crash or a partial takeover without special cases.
//!
//! IPv6 addresses are added with `IFA_F_NODAD`: kernel duplicate-address detection would keep
//! the address tentative (unusable) for about a second, which is the whole failover budget;
//! the guard and the controller already ensure a single owner.

use std::net::IpAddr;

use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use rtnetlink::Handle;
use thiserror::Error;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_address() {
        let on_lo = addresses_on("lo").expect("getifaddrs");
        assert!(on_lo.contains(&IpAddr::from([127, 0, 0, 1])), "{on_lo:?}");
        assert!(addresses_on("no-such-if0").unwrap().is_empty());
    }

    #[test]
    fn labels_are_checked_like_iproute2_does() {
        let mut address = OverlayAddress::host("10.231.0.100".parse().unwrap());
        address.label = Some("eth0:vip".into());
        assert!(address.validate("eth0").is_ok());
        address.label = Some("vip".into());
        assert!(address.validate("eth0").is_err());
        let v6 = OverlayAddress {
            label: Some("eth0:v6".into()),
            ..OverlayAddress::host("fd00::1".parse().unwrap())
        };
        assert!(v6.validate("eth0").is_err());
        let long = OverlayAddress {
            prefix_len: 33,
            ..OverlayAddress::host("10.0.0.1".parse().unwrap())
        };
        assert!(long.validate("eth0").is_err());
    }
}

/// The IP addresses on `interface` right now, read with `getifaddrs(3)`.
///
/// Synchronous on purpose: [`crate::NodeExecutor::new`] uses it to decide, before the guard
/// is attached, which overlay addresses a killed predecessor left serving, so that adopting
/// them never drops a packet.
pub fn addresses_on(interface: &str) -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        // IPv4 labels ("eth0:vip") name the same interface.
        let name = name.to_string_lossy();
        let base = name.split(':').next().unwrap_or_default();
        if base != interface {
            continue;
        }
        // SAFETY: ifa_addr is non-null and its family says which sockaddr it is.
        let ip = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        found.extend(ip);
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// One overlay address as configured.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OverlayAddress {
    pub ip: IpAddr,
    /// Default /32 for IPv4 and /128 for IPv6: the overlay address is a host address.
    pub prefix_len: u8,
    /// IPv4 only (the kernel keeps labels for IPv4 alone); must start with the interface name,
    /// as `ip address add ... label` requires, and fit in 15 bytes.
    pub label: Option<String>,
}

impl OverlayAddress {
    pub fn host(ip: IpAddr) -> Self {
        let prefix_len = if ip.is_ipv4() { 32 } else { 128 };
        Self {
            ip,
            prefix_len,
            label: None,
        }
    }

    /// Checks what the kernel would reject with an opaque EINVAL.
    pub fn validate(&self, interface: &str) -> Result<(), AddressError> {
        let max = if self.ip.is_ipv4() { 32 } else { 128 };
        if self.prefix_len > max {
            return Err(AddressError::Invalid(format!(
                "prefix length {} of {} is longer than {max}",
                self.prefix_len, self.ip
            )));
        }
        if self.ip.is_unspecified() || self.ip.is_multicast() || self.ip.is_loopback() {
            return Err(AddressError::Invalid(format!(
                "{} cannot be an overlay address",
                self.ip
            )));
        }
        if let Some(label) = &self.label {
            if self.ip.is_ipv6() {
                return Err(AddressError::Invalid(format!(
                    "label {label:?} on IPv6 address {}: the kernel keeps labels for IPv4 only",
                    self.ip
                )));
            }
            if !label.starts_with(interface) || label.len() > 15 || label.contains('\0') {
                return Err(AddressError::Invalid(format!(
                    "label {label:?} must start with the interface name {interface:?} and be at most 15 bytes"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum AddressError {
    #[error("invalid overlay address: {0}")]
    Invalid(String),
    #[error("netlink: {op} {ip}: {source}")]
    Netlink {
        op: &'static str,
        ip: IpAddr,
        source: rtnetlink::Error,
    },
    #[error("{ip} was added but the kernel did not make it local within {waited:?}")]
    NotLocal {
        ip: IpAddr,
        waited: std::time::Duration,
    },
    #[error("cannot open a netlink socket: {0}")]
    Open(std::io::Error),
}

/// What the kernel has for one configured address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AddressPresence {
    /// Present with the configured prefix (and label, when one is configured).
    AsConfigured,
    /// Present but with another prefix length or label: the `detail` says which.
    Different {
        detail: String,
    },
    Absent,
}

/// rtnetlink handle bound to the network namespace it was created in, and the interface.
pub struct AddressManager {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    ifindex: u32,
    interface: String,
}

impl Drop for AddressManager {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

impl AddressManager {
    /// Opens the netlink socket in the calling thread's network namespace; must be called
    /// inside a tokio runtime (the socket is driven by a task).
    pub fn new(interface: &str, ifindex: u32) -> Result<Self, AddressError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(AddressError::Open)?;
        let connection = tokio::spawn(connection);
        Ok(Self {
            handle,
            connection,
            ifindex,
            interface: interface.to_owned(),
        })
    }

    /// Adds the address, or replaces it in place when it is already there (NLM_F_REPLACE),
    /// so a repeat is a no-op and a stale different prefix/label is corrected.
    pub async fn add(&self, address: &OverlayAddress) -> Result<(), AddressError> {
        address.validate(&self.interface)?;
        let mut request = self
            .handle
            .address()
            .add(self.ifindex, address.ip, address.prefix_len)
            .replace();
        let message = request.message_mut();
        if let Some(label) = &address.label {
            message
                .attributes
                .push(AddressAttribute::Label(label.clone()));
        }
        if address.ip.is_ipv6() {
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(|source| AddressError::Netlink {
                op: "add",
                ip: address.ip,
                source,
            })
    }

    /// Waits until the kernel routes `ip` as local, i.e. until packets to it are delivered.
    ///
    /// IPv4 addresses are local as soon as the add returns. IPv6 addresses are not: even with
    /// `IFA_F_NODAD` the kernel installs their local route and joins their solicited-node
    /// group from its DAD work queue, milliseconds later (tens under load). Until then
    /// neighbour solicitations for the address go unanswered or its SYNs are dropped
    /// (`Ip6InAddrErrors`) — seen in the lab — so announcing before that would invite clients
    /// to a node that cannot serve them yet.
    pub async fn wait_until_local(
        &self,
        ip: IpAddr,
        limit: std::time::Duration,
    ) -> Result<(), AddressError> {
        let start = std::time::Instant::now();
        loop {
            if self.is_local(ip).await? {
                return Ok(());
            }
            if start.elapsed() >= limit {
                return Err(AddressError::NotLocal {
                    ip,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_micros(500)).await;
        }
    }

    /// `ip route get IP`: whether the kernel's route lookup for `ip` ends in a local route.
    async fn is_local(&self, ip: IpAddr) -> Result<bool, AddressError> {
        let mut message = RouteMessage::default();
        message.header.address_family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        message.header.destination_prefix_length = if ip.is_ipv4() { 32 } else { 128 };
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(ip)));
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(message));
        request.header.flags = NLM_F_REQUEST;
        let lookup_error = |source| AddressError::Netlink {
            op: "route lookup",
            ip,
            source,
        };
        let mut handle = self.handle.clone();
        let mut responses = handle.request(request).map_err(lookup_error)?;
        while let Some(response) = responses.next().await {
            match response.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                    return Ok(route.header.kind == RouteType::Local);
                }
                // No route at all (e.g. the link is down): not local.
                NetlinkPayload::Error(_) => return Ok(false),
                _ => {}
            }
        }
        Ok(false)
    }

    /// Removes the address; absent already counts as success. One netlink round trip when
    /// the address is as configured; a present address with another prefix (left by hand or
    /// by an older configuration) is found by a dump and removed too.
    pub async fn remove(&self, address: &OverlayAddress) -> Result<(), AddressError> {
        let mut direct = AddressMessage::default();
        direct.header.family = if address.ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        direct.header.prefix_len = address.prefix_len;
        direct.header.index = self.ifindex;
        direct.attributes.push(AddressAttribute::Local(address.ip));
        direct
            .attributes
            .push(AddressAttribute::Address(address.ip));
        match self.delete(direct, address.ip).await {
            Err(AddressError::Netlink { source, .. })
                if matches!(errno(&source), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => {}
            other => return other,
        }
        let Some(message) = self.find(address.ip).await? else {
            return Ok(());
        };
        self.delete(message, address.ip).await
    }

    async fn delete(&self, message: AddressMessage, ip: IpAddr) -> Result<(), AddressError> {
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(source) => Err(AddressError::Netlink {
                op: "remove",
                ip,
                source,
            }),
        }
    }

    /// Whether the address is on the interface as configured.
    pub async fn presence(
        &self,
        address: &OverlayAddress,
    ) -> Result<AddressPresence, AddressError> {
        let Some(message) = self.find(address.ip).await? else {
            return Ok(AddressPresence::Absent);
        };
        let mut differences = Vec::new();
        if message.header.prefix_len != address.prefix_len {
            differences.push(format!(
                "prefix /{} instead of /{}",
                message.header.prefix_len, address.prefix_len
            ));
        }
        if let Some(wanted) = &address.label {
            let label = message.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Label(label) => Some(label.as_str()),
                _ => None,
            });
            if label != Some(wanted.as_str()) {
                differences.push(format!("label {label:?} instead of {wanted:?}"));
            }
        }
        Ok(if differences.is_empty() {
            AddressPresence::AsConfigured
        } else {
            AddressPresence::Different {
                detail: differences.join(", "),
            }
        })
    }

    async fn find(&self, ip: IpAddr) -> Result<Option<AddressMessage>, AddressError> {
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.ifindex)
            .set_address_filter(ip)
            .execute();
        dump.try_next()
            .await
            .map_err(|source| AddressError::Netlink {
                op: "find",
                ip,
                source,
            })
    }
}
