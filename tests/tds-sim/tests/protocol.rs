//! Wire-level behaviour checked with a raw client: a TLS attempt after ENCRYPT_NOT_SUP gets
//! an ERROR and a close (no hang), a malformed packet closes the connection, ATTENTION is
//! acknowledged with DONE_ATTN, the negotiated packet size splits answers with EOM only on
//! the last packet, and TDS 7.1 gets the 7.1 token layouts.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{PASSWORD, Raw};
use tds_codec::packet::{self, PacketType};
use tds_codec::token::done::status;
use tds_codec::token::{Token, decode_stream};
use tds_codec::{Login7, SqlBatch, tds_version};
use tds_sim::{Role, SimConfig, SimHandle};

async fn sim() -> SimHandle {
    let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
    cfg.password = PASSWORD.into();
    tds_sim::start(cfg).await.expect("start")
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn batch(r: &mut Raw, sql: &str, v72: bool) {
    let headers = v72.then(|| tds_codec::all_headers::AllHeaders {
        transaction_descriptor: Some(0),
        outstanding_requests: Some(1),
        other_types: vec![],
    });
    r.send(
        PacketType::SqlBatch,
        &SqlBatch {
            headers,
            text: sql.into(),
        }
        .encode(),
    )
    .unwrap();
}

#[tokio::test]
async fn tls_after_not_sup_is_an_error_then_close() {
    let sim = sim().await;
    let addr = sim.tds_addr();
    blocking(move || {
        let mut r = Raw::connect(addr).unwrap();
        r.prelogin().unwrap();
        r.read_message().unwrap();
        // A TLS ClientHello record header, wrapped in a PRELOGIN packet as TDS 7.x does.
        r.send(
            PacketType::PreLogin,
            &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00],
        )
        .unwrap();
        let (ty, payload) = r.read_message().expect("an answer, not a hang");
        assert_eq!(ty, 0x04);
        let toks = decode_stream(&payload, false).unwrap();
        assert!(
            matches!(&toks[0], Token::Message(m) if m.class >= 20 && m.text.contains("encryption")),
            "{toks:?}"
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            r.stream.read(&mut buf).unwrap(),
            0,
            "connection closed after the error"
        );
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_packets_close_the_connection() {
    let sim = sim().await;
    let addr = sim.tds_addr();
    blocking(move || {
        // Unknown packet type.
        let mut r = Raw::connect(addr).unwrap();
        r.stream
            .write_all(&[0x99, 0x01, 0x00, 0x08, 0, 0, 1, 0])
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.stream.read(&mut buf).unwrap(), 0);
        // A LOGIN7 whose UserName points outside the record.
        let mut r = Raw::connect(addr).unwrap();
        r.prelogin().unwrap();
        r.read_message().unwrap();
        let mut l = Login7 {
            tds_version: tds_version::V7_4,
            username: "tdsvip".into(),
            ..Default::default()
        }
        .encode();
        l[40] = 0xF0;
        l[41] = 0x7F;
        r.send(PacketType::Login7, &l).unwrap();
        assert_eq!(r.stream.read(&mut buf).unwrap(), 0);
    })
    .await;
    // The server is unaffected.
    blocking(move || Raw::logged_in(addr)).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn attention_is_acknowledged_with_done_attn() {
    let sim = sim().await;
    let addr = sim.tds_addr();
    blocking(move || {
        let mut r = Raw::logged_in(addr);
        r.send(PacketType::Attention, &[]).unwrap();
        let (_, payload) = r.read_message().unwrap();
        let toks = decode_stream(&payload, true).unwrap();
        assert!(matches!(toks.as_slice(), [Token::Done(d)] if d.status & status::ATTN != 0 && !d.is_more()), "{toks:?}");
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn packet_size_is_honoured_and_seven_one_layouts_are_used() {
    let sim = sim().await;
    let addr = sim.tds_addr();
    blocking(move || {
        let mut r = Raw::connect(addr).unwrap();
        r.prelogin().unwrap();
        r.read_message().unwrap();
        let l = Login7 {
            tds_version: tds_version::V7_1,
            packet_size: 512,
            username: common::USER.into(),
            password: PASSWORD.into(),
            ..Default::default()
        };
        r.send(PacketType::Login7, &l.encode()).unwrap();
        let (_, payload) = r.read_message().unwrap();
        let toks = decode_stream(&payload, false).expect("7.1 layouts");
        assert!(toks.iter().any(|t| matches!(t, Token::LoginAck(a) if a.tds_version == tds_version::V7_1)));
        assert!(toks.iter().any(|t| matches!(t, Token::EnvChange(tds_codec::token::EnvChange::PacketSize { new, .. }) if new == "512")));

        // A large answer (@@VERSION twice, several statements) in 512-byte packets.
        batch(&mut r, "SELECT @@VERSION, @@VERSION; SELECT @@VERSION; SELECT 1", false);
        r.stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut payload = Vec::new();
        let mut packets = 0;
        loop {
            let mut h = [0u8; 8];
            r.stream.read_exact(&mut h).unwrap();
            let len = u16::from_be_bytes([h[2], h[3]]) as usize;
            assert!(len <= 512, "packet of {len} bytes");
            let mut body = vec![0u8; len - 8];
            r.stream.read_exact(&mut body).unwrap();
            payload.extend(body);
            packets += 1;
            if h[1] & packet::status::EOM != 0 {
                assert!(len <= 512);
                break;
            }
            assert_eq!(len, 512, "only the last packet may be short");
        }
        assert!(packets > 1);
        let toks = decode_stream(&payload, false).expect("4-byte DONE counts, 2-byte UserType");
        let dones: Vec<_> = toks.iter().filter_map(|t| if let Token::Done(d) = t { Some(*d) } else { None }).collect();
        assert_eq!(dones.len(), 3);
        assert!(dones[..2].iter().all(|d| d.is_more()) && !dones[2].is_more(), "{dones:?}");
        assert!(dones.iter().all(|d| d.status & status::COUNT != 0 && d.row_count == 1));
    })
    .await;
    sim.shutdown().await;
}
