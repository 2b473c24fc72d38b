use super::*;
use tokio::io::AsyncReadExt;

/// A frame as a client writes it.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A literal with incremental indexing of static name `index` (RFC 7541, 6.2.1), written by
/// hand as grpcio does for :authority; `value` short enough for a 7-bit length.
fn indexed_name_literal(index: u8, value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x40 | index, value.len() as u8];
    b.extend_from_slice(value);
    b
}

/// Runs `input` through the adapter and returns what the server would read.
async fn through(input: Vec<u8>) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    tokio::io::AsyncWriteExt::write_all(&mut client, &input)
        .await
        .unwrap();
    drop(client);
    let mut fixed = AuthorityFix::new(server);
    let mut out = Vec::new();
    fixed.read_to_end(&mut out).await.unwrap();
    out
}

/// Splits the server's view into frames.
fn frames(mut data: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = u32::from_be_bytes([0, data[0], data[1], data[2]]) as usize;
        let stream = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
        out.push((data[3], data[4], stream, data[9..9 + len].to_vec()));
        data = &data[9 + len..];
    }
    out
}

const GRPCIO_AUTHORITY: &[u8] = b"run%2Frp%2Fcrius.sock";

#[tokio::test]
async fn an_invalid_authority_becomes_localhost_and_the_table_stays_consistent() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    // :method POST (static 3), :path literal, :authority with indexing (grpcio's form).
    let mut block = vec![0x83];
    block.extend(indexed_name_literal(
        4,
        b"/runtime.v1.RuntimeService/Version",
    ));
    block.extend(indexed_name_literal(1, GRPCIO_AUTHORITY));
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));
    input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
    // The second request refers to the authority through the dynamic table (index 62), split
    // over a HEADERS and a CONTINUATION frame, padded, with priority.
    let mut padded = vec![2u8];
    padded.extend([0, 0, 0, 0, 16]);
    padded.extend([0x83, 0xbe]);
    padded.extend([0, 0]);
    input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &padded));
    input.extend(frame(CONTINUATION, END_HEADERS, 3, &[0xbf]));

    let out = through(input).await;
    assert!(out.starts_with(PREFACE));
    let got = frames(&out[PREFACE.len()..]);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((got[0].0, got[0].3.as_slice()), (0x4, &[][..]));
    assert_eq!(got[2].3, b"\0\0\0\0\0", "DATA untouched");

    let mut server = loona_hpack::Decoder::new();
    let first = server.decode(&got[1].3).unwrap();
    assert_eq!(got[1].1, END_HEADERS);
    assert_eq!(
        first,
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (
                b":path".to_vec(),
                b"/runtime.v1.RuntimeService/Version".to_vec()
            ),
            (b":authority".to_vec(), b"localhost".to_vec()),
        ]
    );
    let (kind, flags, stream, payload) = &got[3];
    assert_eq!((*kind, *stream), (HEADERS, 3));
    assert_eq!(*flags, END_STREAM | PRIORITY | END_HEADERS);
    assert_eq!(&payload[..5], &[0, 0, 0, 0, 16], "priority kept");
    let second = server.decode(&payload[5..]).unwrap();
    assert_eq!(
        second,
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":authority".to_vec(), b"localhost".to_vec()),
            (
                b":path".to_vec(),
                b"/runtime.v1.RuntimeService/Version".to_vec()
            ),
        ]
    );
}

#[tokio::test]
async fn valid_authorities_and_other_streams_are_kept() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &indexed_name_literal(1, b"localhost:1234"),
    ));
    let out = through(input).await;
    let got = frames(&out[PREFACE.len()..]);
    let headers = loona_hpack::Decoder::new().decode(&got[0].3).unwrap();
    assert_eq!(
        headers,
        vec![(b":authority".to_vec(), b"localhost:1234".to_vec())]
    );
    // Not HTTP/2: as it came.
    let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_eq!(through(http1.clone()).await, http1);
}

#[tokio::test]
async fn a_large_block_is_split_into_continuations() {
    let mut input = PREFACE.to_vec();
    let big = vec![b'a'; 20_000];
    let mut block = vec![0x00, 0x01, b'x', 0x7f];
    let mut len = Vec::new();
    integer(&mut len, 0, 7, big.len());
    block.truncate(3);
    block.extend(len);
    block.extend(&big);
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &block));
    let out = through(input).await;
    let got = frames(&out[PREFACE.len()..]);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0, got[0].1), (HEADERS, END_STREAM));
    assert_eq!((got[1].0, got[1].1), (CONTINUATION, END_HEADERS));
    let mut joined = got[0].3.clone();
    joined.extend(&got[1].3);
    let headers = loona_hpack::Decoder::new().decode(&joined).unwrap();
    assert_eq!(headers, vec![(b"x".to_vec(), big)]);
}

#[test]
fn acceptable_authorities() {
    assert!(acceptable(b"localhost"));
    assert!(acceptable(b"127.0.0.1:5000"));
    assert!(!acceptable(GRPCIO_AUTHORITY));
    assert!(!acceptable(b"/var/run/crius.sock"));
}

#[tokio::test]
async fn grpc_timeout_is_renamed_for_the_deadline_layer() {
    let mut block = vec![0x00, 12];
    block.extend_from_slice(b"grpc-timeout");
    block.push(2);
    block.extend_from_slice(b"5m");
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));
    let out = through(input).await;
    let got = frames(&out[PREFACE.len()..]);
    let headers = loona_hpack::Decoder::new().decode(&got[0].3).unwrap();
    assert_eq!(
        headers,
        vec![(DEADLINE_HEADER.as_bytes().to_vec(), b"5m".to_vec())]
    );
}
