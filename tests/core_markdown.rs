//! `meshctl plan --format markdown`, the CI job summary: rendered from the plan alone, so it is
//! redacted by construction. Snapshotted for a converged network, a drifted one (a file diff
//! folded in `<details>`) and one with an unreachable host; never a private key in any.

mod support;

use std::collections::BTreeMap;

use meshctl::names::HostName;
use meshctl::plan::Plan;
use meshctl::planner::{self, Gathered};
use meshctl::render_markdown::markdown;
use meshctl::state::LiveHost;
use support::core::*;

fn converged_live(fx: &Fixture) -> BTreeMap<HostName, Gathered> {
    fx.desired()
        .iter()
        .map(|(h, d)| (h.clone(), Ok(converged(h.as_str(), d))))
        .collect()
}

fn live_mut<'a>(live: &'a mut BTreeMap<HostName, Gathered>, name: &str) -> &'a mut LiveHost {
    live.get_mut(&host(name)).unwrap().as_mut().unwrap()
}

fn plan(fx: &Fixture, live: &BTreeMap<HostName, Gathered>) -> Plan {
    normalised(&planner::build(&fx.inputs, &fx.desired(), live))
}

fn checked(name: &str, md: &str) {
    assert_no_private_key(md, name);
    assert!(!md.contains('\x1b'), "{name}: no terminal escapes");
    insta::assert_snapshot!(name, md);
}

#[test]
fn a_converged_network_says_no_drift() {
    let fx = Fixture::repo("example.yaml", &ALL_HOST_KEYS);
    let md = markdown(&plan(&fx, &converged_live(&fx)));
    assert!(md.starts_with("## meshctl plan `home`: no drift\n"), "{md}");
    assert!(!md.contains("### Unreachable"), "{md}");
    checked("markdown_converged", &md);
}

#[test]
fn drift_names_hosts_counts_and_folds_file_diffs() {
    let fx = Fixture::repo("example.yaml", &ALL_HOST_KEYS);
    let mut live = converged_live(&fx);
    let nas = live_mut(&mut live, "nas");
    let f = nas.state.files.get_mut("/etc/wireguard/wg0.conf").unwrap();
    f.content = f
        .content
        .replace("PersistentKeepalive = 25", "PersistentKeepalive = 60");
    nas.state
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    live_mut(&mut live, "laptop")
        .state
        .interface
        .as_mut()
        .unwrap()
        .peers
        .get_mut(VPS)
        .unwrap()
        .persistent_keepalive = Some(10);
    let md = markdown(&plan(&fx, &live));
    assert!(md.contains(": drift on 2 hosts\n"), "{md}");
    assert!(md.contains("| nas | gateway | drift | 0 | 2 | 0 |"), "{md}");
    assert!(md.contains("| vps | hub | in sync | 0 | 0 | 0 |"), "{md}");
    assert!(
        md.contains("<details><summary><code>~</code> file /etc/wireguard/wg0.conf</summary>"),
        "{md}"
    );
    assert!(md.contains("  -PersistentKeepalive = 60"), "{md}");
    assert!(md.contains("### Manual steps"), "{md}");
    checked("markdown_drift", &md);
}

#[test]
fn an_unreachable_host_is_listed_with_its_error() {
    let fx = Fixture::repo("example.yaml", &ALL_HOST_KEYS);
    let mut live = converged_live(&fx);
    live.insert(
        host("nas"),
        Err("ssh: connect to host <nas> port 22: No route | to host".into()),
    );
    let md = markdown(&plan(&fx, &live));
    assert!(md.contains(": no drift, 1 host unreachable\n"), "{md}");
    assert!(
        md.contains("| nas | gateway | unreachable | – | – | – |"),
        "{md}"
    );
    assert!(
        md.contains("&lt;nas&gt; port 22: No route \\| to host"),
        "host text is escaped: {md}"
    );
    checked("markdown_unreachable", &md);
}
