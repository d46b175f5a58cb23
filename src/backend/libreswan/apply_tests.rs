//! Unit tests of `apply`: how a command's outcome is read.

use super::apply::{failure, refused, timed_out};
use crate::backend::command::{CmdOutput, CommandError};

fn out(code: i32, stdout: &str, stderr: &str) -> CmdOutput {
    CmdOutput {
        code,
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

#[test]
fn failures_carry_plutos_reason_from_stdout() {
    // pluto 5.2's addconn here, the peer certificate's NSS object gone (exit code 56).
    let v5 = "\"tun-in-1\": failed to add connection: right certificate 'ovs_cert_right' not found in the NSS database\n";
    assert_eq!(
        failure(&Ok(out(56, v5, ""))).unwrap(),
        "exit code 56: \"tun-in-1\": failed to add connection: right certificate 'ovs_cert_right' not found in the NSS database"
    );
    // pluto 4.10's `auto --rereadcerts` after the certificate was deleted under a conn:
    // comments (000) dropped, the last three lines kept.
    let v4 = "000 \"tun-out-1\": reloaded leftcert='ovs_certkey_left'\n\
              002 \"tun-out-1\": NSS: could not extract CKAID from RSA certificate 'ovs_cert_right'\n\
              027 \"tun-out-1\": reloading rightcert='ovs_cert_right' failed: right certificate 'ovs_cert_right' pubkey could not be loaded\n\
              000 \"tun-in-1\": reloaded leftcert='ovs_certkey_left'\n\
              002 \"tun-in-1\": NSS: could not extract CKAID from RSA certificate 'ovs_cert_right'\n\
              027 \"tun-in-1\": reloading rightcert='ovs_cert_right' failed: right certificate 'ovs_cert_right' pubkey could not be loaded\n";
    let f = failure(&Ok(out(27, v4, ""))).unwrap();
    assert!(f.starts_with("exit code 27: 027 \"tun-out-1\""), "{f}");
    assert!(
        f.ends_with("'ovs_cert_right' pubkey could not be loaded"),
        "{f}"
    );
    assert!(!f.contains("reloaded leftcert"), "{f}");
    // pluto 4.10's addconn prints nothing when pluto refuses the conn.
    assert_eq!(
        failure(&Ok(out(36, "", ""))).unwrap(),
        "exit code 36 (no reason printed; see pluto's log)"
    );
    // stderr first; control characters do not reach the log or ipsec-error.
    assert_eq!(
        failure(&Ok(out(1, "ignored", "bad\u{1b}[31m thing\n"))).unwrap(),
        "exit code 1: bad?[31m thing"
    );
    assert_eq!(failure(&Ok(out(0, "000 fine\n", ""))), None);
    let long = "x".repeat(1000);
    assert_eq!(failure(&Ok(out(2, &long, ""))).unwrap().len(), 213);
}

#[test]
fn only_a_timeout_leaves_the_outcome_of_an_initiate_open() {
    let timeout = Err(CommandError::Timeout {
        what: "start ipsec connection tun-in-1".into(),
        secs: 3,
    });
    assert!(failure(&timeout).is_some() && timed_out(&timeout));
    let refused = Ok(out(1, "", "whack: connection not found\n"));
    assert!(failure(&refused).is_some() && !timed_out(&refused));
    assert!(!timed_out(&Ok(out(0, "", ""))));
}

#[test]
fn refusals_name_their_conn_in_v4_and_v5_output() {
    // pluto 4.10 in a netns here: one conn initiated, two could not be oriented.
    let v4 = "000 initiating all conns with alias='ovs-monitor-ipsec:start:1f'\n\
              181 \"e-out-1\" #2: initiating IKEv2 connection\n\
              022 \"d-out-1\": we cannot identify ourselves with either end of this connection.  198.51.100.7 or 198.51.100.9 are not usable\n\
              022 \"c-out-1\": we cannot identify ourselves with either end of this connection.  0.0.0.0 or 192.0.2.9 are not usable\n";
    assert_eq!(
        refused(v4).into_iter().collect::<Vec<_>>(),
        ["c-out-1", "d-out-1"]
    );
    // v5 (libreswan's connalias-02 test output, and initiate.c's messages).
    let v5 = "initiating all connections with alias \"ovs-monitor-ipsec:start:1f\"\n\
              \"west-cuckold\" #1: initiating IKEv2 connection to 192.1.2.23 using UDP\n\
              \"west-cuckoo\": queue Child SA; waiting on IKE SA \"west-cuckold\" #1 negotiating with 192.1.2.23\n\
              \"west-x\": cannot initiate connection without knowing peer IP address (kind=CK_PERMANENT)\n\
              initiating 3 connections\n";
    assert_eq!(refused(v5).into_iter().collect::<Vec<_>>(), ["west-x"]);
}
