//! Traffic control for the bandwidth stage, laid out as the reference bandwidth plugin
//! does it: a root tbf `1:` on the host veth (traffic into the pod), and for traffic out
//! of the pod an ingress qdisc `ffff:` on the host veth whose u32 match-all filter
//! (pref 1, protocol all, flowid 1:1) redirects every packet (mirred egress redirect,
//! stolen) to an ifb device that carries its own root tbf `1:`.
//!
//! Deleting the host veth deletes its qdiscs and filters; the ifb must be deleted on its
//! own. A qdisc dump lists every device's qdiscs: [`Netlink::qdiscs`] filters by ifindex.

use super::{tbf, Netlink};
use anyhow::{bail, Result};
use netlink_packet_core::{DefaultNla, Nla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

/// TC_H_ROOT
pub const TC_H_ROOT: u32 = 0xffff_ffff;
/// TC_H_INGRESS, the parent of an ingress qdisc
pub const TC_H_INGRESS: u32 = 0xffff_fff1;
/// The ingress qdisc's handle, `ffff:`, also the parent of its filters.
pub const INGRESS_HANDLE: u32 = 0xffff_0000;
/// The tbf handle, `1:`.
pub const TBF_HANDLE: u32 = 0x0001_0000;
/// ETH_P_ALL
const ETH_P_ALL: u16 = 0x0003;

/// A qdisc on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    /// "tbf", "ingress", "noqueue", ...
    pub kind: String,
    /// e.g. 0x10000 for `1:`, 0xffff0000 for `ffff:`
    pub handle: u32,
    /// [`TC_H_ROOT`], [`TC_H_INGRESS`] or a class
    pub parent: u32,
    pub tbf: Option<tbf::TbfParams>,
}

/// A mirred action of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirred {
    /// The target device.
    pub ifindex: u32,
    /// Egress (true) or ingress.
    pub egress: bool,
    /// Redirect (true) or mirror.
    pub redirect: bool,
}

/// A tc filter on one device and parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub index: u32,
    /// "u32", ...
    pub kind: String,
    pub handle: u32,
    pub parent: u32,
    /// preference
    pub priority: u16,
    /// ethertype in host order (3 = all)
    pub protocol: u16,
    /// u32 flowid
    pub classid: Option<u32>,
    pub mirred: Vec<Mirred>,
}

impl Filter {
    /// The device this filter redirects to on egress (the reference's ifb redirect).
    pub fn redirect_to(&self) -> Option<u32> {
        self.mirred.iter().find(|m| m.egress && m.redirect).map(|m| m.ifindex)
    }
}

fn tc_index(index: u32) -> Result<i32> {
    match i32::try_from(index) {
        Ok(i) if i > 0 => Ok(i),
        _ => bail!("invalid ifindex {index}"),
    }
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

/// The kind and the raw TCA_OPTIONS content of a qdisc or class message: an untyped
/// kind (tbf, htb) comes back as TCA_OPTIONS whole.
pub(super) fn kind_and_options(m: &TcMessage) -> (String, Option<Vec<u8>>) {
    let mut kind = String::new();
    let mut opts: Option<Vec<u8>> = None;
    for a in &m.attributes {
        match a {
            TcAttribute::Kind(k) => kind = k.clone(),
            TcAttribute::Options(os) => {
                for o in os {
                    if let TcOption::Other(nla) = o {
                        if nla.kind() & netlink_packet_core::NLA_TYPE_MASK == 2 {
                            opts = Some(nla_value(nla));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (kind, opts)
}

fn qdisc_from_msg(m: &TcMessage) -> Option<Qdisc> {
    let index = u32::try_from(m.header.index).ok()?;
    let (kind, opts) = kind_and_options(m);
    let tbf = if kind == "tbf" {
        opts.as_deref().and_then(tbf::parse_options)
    } else {
        None
    };
    Some(Qdisc {
        index,
        kind,
        handle: u32::from(m.header.handle),
        parent: u32::from(m.header.parent),
        tbf,
    })
}

fn filter_from_msg(m: &TcMessage) -> Option<Filter> {
    let index = u32::try_from(m.header.index).ok()?;
    let mut f = Filter {
        index,
        kind: String::new(),
        handle: u32::from(m.header.handle),
        parent: u32::from(m.header.parent),
        priority: (m.header.info >> 16) as u16,
        protocol: u16::from_be((m.header.info & 0xffff) as u16),
        classid: None,
        mirred: Vec::new(),
    };
    for a in &m.attributes {
        match a {
            TcAttribute::Kind(k) => f.kind = k.clone(),
            TcAttribute::Options(os) => {
                for o in os {
                    let TcOption::U32(u) = o else { continue };
                    match u {
                        TcFilterU32Option::ClassId(h) => f.classid = Some(u32::from(*h)),
                        TcFilterU32Option::Action(actions) => {
                            for act in actions {
                                for aa in &act.attributes {
                                    let TcActionAttribute::Options(aos) = aa else { continue };
                                    for ao in aos {
                                        if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = ao {
                                            let (egress, redirect) = match p.eaction {
                                                TcMirrorActionType::EgressRedir => (true, true),
                                                TcMirrorActionType::EgressMirror => (true, false),
                                                TcMirrorActionType::IngressRedir => (false, true),
                                                TcMirrorActionType::IngressMirror => (false, false),
                                                _ => continue,
                                            };
                                            f.mirred.push(Mirred {
                                                ifindex: p.ifindex,
                                                egress,
                                                redirect,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(f)
}

impl Netlink {
    fn new_qdisc(&mut self, m: TcMessage, what: String) -> Result<()> {
        let op = self.op(what);
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )
    }

    /// Root tbf `1:` on link `index` for a rate (bytes/s), burst and limit (bytes), the
    /// buffer computed from the burst as the reference computes it
    /// ([`tbf::ReferenceTbf`]).
    pub fn add_tbf(&mut self, index: u32, rate_bytes_per_sec: u64, burst_bytes: u32, limit_bytes: u32) -> Result<()> {
        let buffer = tbf::buffer_ticks(rate_bytes_per_sec, burst_bytes);
        self.add_tbf_ticks(index, rate_bytes_per_sec, buffer, limit_bytes)
    }

    /// Root tbf `1:` on link `index` (`tc qdisc add dev X root handle 1: tbf ...`) with the
    /// buffer in psched ticks. Rate and buffer must be positive.
    pub fn add_tbf_ticks(
        &mut self,
        index: u32,
        rate_bytes_per_sec: u64,
        buffer_ticks: u32,
        limit_bytes: u32,
    ) -> Result<()> {
        if rate_bytes_per_sec == 0 || buffer_ticks == 0 {
            bail!("tbf on link {index}: rate ({rate_bytes_per_sec} B/s) and buffer ({buffer_ticks} ticks) must be positive");
        }
        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::from(TC_H_ROOT);
        m.header.handle = TcHandle::from(TBF_HANDLE);
        m.attributes.push(TcAttribute::Kind("tbf".to_string()));
        m.attributes.push(TcAttribute::Options(
            tbf::options(rate_bytes_per_sec, buffer_ticks, limit_bytes)
                .into_iter()
                .map(|(t, v)| TcOption::Other(DefaultNla::new(t, v)))
                .collect(),
        ));
        self.new_qdisc(
            m,
            format!(
                "add tbf (rate {rate_bytes_per_sec} B/s, buffer {buffer_ticks} ticks, limit {limit_bytes} B) on link {index}"
            ),
        )
    }

    /// The ingress qdisc `ffff:` on link `index`.
    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<()> {
        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::from(TC_H_INGRESS);
        m.header.handle = TcHandle::from(INGRESS_HANDLE);
        m.attributes.push(TcAttribute::Kind("ingress".to_string()));
        self.new_qdisc(m, format!("add ingress qdisc on link {index}"))
    }

    /// On the ingress qdisc of `index`: u32 match-all (pref 1, protocol all, flowid 1:1)
    /// with a mirred egress redirect to `to_index` (action stolen).
    pub fn add_redirect_filter(&mut self, index: u32, to_index: u32) -> Result<()> {
        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::from(INGRESS_HANDLE);
        // tcm_info: preference in the high half, the big-endian protocol in the low half.
        m.header.info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
        m.attributes.push(TcAttribute::Kind("u32".to_string()));

        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys = 1;
        sel.keys = vec![TcU32Key::default()];

        let mut mirror = TcMirror::default();
        mirror.generic = TcActionGeneric::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = to_index;
        let mut action = TcAction::default();
        action.tab = 1;
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".to_string()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(mirror))]),
        ];
        m.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::ClassId(TcHandle { major: 1, minor: 1 })),
            TcOption::U32(TcFilterU32Option::Selector(sel)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]));
        let op = self.op(format!("add u32 redirect filter from link {index} to link {to_index}"));
        self.request(RouteNetlinkMessage::NewTrafficFilter(m), NLM_F_CREATE | NLM_F_EXCL, &op)
    }

    /// Delete the qdisc `handle` under `parent` on link `index` (its filters go with it).
    pub fn del_qdisc(&mut self, index: u32, parent: u32, handle: u32) -> Result<()> {
        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::from(parent);
        m.header.handle = TcHandle::from(handle);
        let op = self.op(format!("delete qdisc {handle:#x} (parent {parent:#x}) on link {index}"));
        self.request(RouteNetlinkMessage::DelQueueDiscipline(m), 0, &op)
    }

    /// The qdiscs of link `index`.
    pub fn qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        let mut all = self.dump_qdiscs(format!("list qdiscs of link {index}"))?;
        all.retain(|q| q.index == index);
        Ok(all)
    }

    /// The qdiscs of every link, one dump (`cnichain inspect`).
    pub fn all_qdiscs(&mut self) -> Result<Vec<Qdisc>> {
        self.dump_qdiscs("list qdiscs".to_string())
    }

    fn dump_qdiscs(&mut self, what: String) -> Result<Vec<Qdisc>> {
        let op = self.op(what);
        let msgs = self.dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()), &op)?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) => qdisc_from_msg(q),
                _ => None,
            })
            .collect())
    }

    /// The filters of link `index` under `parent` (e.g. [`INGRESS_HANDLE`]). A u32 filter
    /// lists its hash table entries too; those have no mirred actions.
    pub fn filters(&mut self, index: u32, parent: u32) -> Result<Vec<Filter>> {
        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::from(parent);
        let op = self.op(format!("list filters of link {index} (parent {parent:#x})"));
        let msgs = self.dump(RouteNetlinkMessage::GetTrafficFilter(m), &op)?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(f) => filter_from_msg(f),
                _ => None,
            })
            .filter(|f| f.index == index)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_header_layout() {
        // pref 1 in the high half, protocol all big-endian in the low half: on a
        // little-endian machine tcm_info = 0x00010300.
        let info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
        if cfg!(target_endian = "little") {
            assert_eq!(info, 0x0001_0300);
        }
        let mut m = TcMessage::with_index(3);
        m.header.info = info;
        let f = filter_from_msg(&m).unwrap();
        assert_eq!(f.priority, 1);
        assert_eq!(f.protocol, ETH_P_ALL);
        assert_eq!(
            TcHandle::from(INGRESS_HANDLE),
            TcHandle {
                major: 0xffff,
                minor: 0
            }
        );
        assert_eq!(TcHandle::from(TC_H_INGRESS), TcHandle::INGRESS);
        assert_eq!(TcHandle::from(TC_H_ROOT), TcHandle::ROOT);
        assert!(tc_index(0).is_err());
        assert!(tc_index(u32::MAX).is_err());
    }
}
