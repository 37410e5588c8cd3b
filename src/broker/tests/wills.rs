//! Wills and keep-alive.

use super::*;
use crate::protocol::mqtt::{Disconnect, Packet, QoS};

#[test]
fn keep_alive_at_one_and_a_half_times_publishes_the_will() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtMostOnce);
    h.connect(1, &will_client("dev", QoS::AtMostOnce, false));
    assert!(h.tick(14.9).closes.is_empty());
    // A packet moves the deadline to 5 + 15 s.
    h.packet_at(1, &Packet::PingReq, 5.0);
    assert!(h.tick(15.1).closes.is_empty());
    assert!(h.tick(19.9).closes.is_empty());
    let step = h.tick(20.1);
    assert_eq!(
        step.closes,
        vec![(ConnId(1), CloseReason::KeepAliveTimeout)]
    );
    assert_eq!(
        step.publishes(9),
        vec![pub_got(
            "wills/x",
            b"bye",
            QoS::AtMostOnce,
            None,
            false,
            false
        )]
    );
    assert_eq!(h.broker.stats().keep_alive_timeouts, 1);
    assert!(h.lost(1).sends.is_empty(), "the will is published once");
    assert!(h.tick(100.0).closes.is_empty());
}

#[test]
fn keep_alive_zero_never_times_out() {
    let mut h = Harness::new();
    h.connect(1, &Client::new("c"));
    assert!(h.tick(1e6).closes.is_empty());
}

#[test]
fn will_on_loss_not_after_disconnect_and_retained_will() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtLeastOnce);
    h.connect(1, &will_client("a", QoS::AtLeastOnce, false));
    let step = h.lost(1);
    assert_eq!(
        step.publishes(9),
        vec![pub_got(
            "wills/x",
            b"bye",
            QoS::AtLeastOnce,
            Some(1),
            false,
            false
        )]
    );
    assert!(step.closes.is_empty(), "the socket is already gone");

    h.connect(2, &will_client("b", QoS::AtMostOnce, false));
    let step = h.packet(2, &Packet::Disconnect(Disconnect::NORMAL));
    assert_eq!(
        step.closes,
        vec![(ConnId(2), CloseReason::ClientDisconnected)]
    );
    assert!(step.publishes(9).is_empty());
    assert!(h.lost(2).publishes(9).is_empty());

    h.connect(3, &will_client("c", QoS::ExactlyOnce, true));
    h.lost(3);
    assert_eq!(h.broker.stats().retained, 1);
    h.connect(4, &Client::new("late"));
    let step = h.packet(4, &subscribe(1, &[("wills/x", QoS::ExactlyOnce)]));
    assert_eq!(
        step.publishes(4),
        vec![pub_got(
            "wills/x",
            b"bye",
            QoS::ExactlyOnce,
            Some(1),
            true,
            false
        )]
    );
    assert_eq!(h.broker.stats().wills_published, 2);
}

#[test]
fn will_on_protocol_violation() {
    let mut h = Harness::new();
    h.subscriber(9, "watcher", "wills/#", QoS::AtMostOnce);
    h.connect(1, &will_client("a", QoS::AtMostOnce, false));
    let step = h.packet(1, &Packet::PingResp);
    assert_eq!(step.publishes(9).len(), 1);
}
