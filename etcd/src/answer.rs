//! Reading etcd's answers without trusting them: a missing header, a transaction with fewer
//! results than operations, a key or value that is not UTF-8 become errors that say what was
//! missing, never a panic. etcd-client's own helpers unwrap (`TxnResponse::op_responses`) or
//! panic (`Event::event_type`) on such answers, so this reads the protobuf messages directly.

use etcd_client::proto::{PbKeyValue, PbResponseHeader, PbTxnOpResponse, PbTxnResponse};

/// What was wrong with an answer; the caller adds the endpoints and the operation.
pub(crate) type Odd = String;

/// The store revision an answer was given at (for a write: the revision it created).
pub(crate) fn revision(header: Option<&PbResponseHeader>) -> Result<i64, Odd> {
    match header {
        Some(header) if header.revision > 0 => Ok(header.revision),
        Some(header) => Err(format!("header revision {}", header.revision)),
        None => Err("no header".to_owned()),
    }
}

/// The keys returned by the get at position `index` of a transaction's chosen branch.
pub(crate) fn txn_range(txn: &PbTxnResponse, index: usize) -> Result<&[PbKeyValue], Odd> {
    match txn.responses.get(index).and_then(|op| op.response.as_ref()) {
        Some(PbTxnOpResponse::ResponseRange(range)) => Ok(&range.kvs),
        Some(_) => Err(format!("transaction result {index} is not a get")),
        None => Err(format!(
            "transaction has {} results, result {index} missing",
            txn.responses.len()
        )),
    }
}

/// One key-value pair as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextKeyValue {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
    pub(crate) lease: i64,
}

pub(crate) fn text_key_value(kv: &PbKeyValue) -> Result<TextKeyValue, Odd> {
    let key = text("key", &kv.key)?;
    let value = text(&format!("value of {key}"), &kv.value)?;
    Ok(TextKeyValue {
        key,
        value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: kv.lease,
    })
}

/// The single key a get of one key returned, if any.
pub(crate) fn at_most_one(kvs: &[PbKeyValue]) -> Result<Option<TextKeyValue>, Odd> {
    match kvs {
        [] => Ok(None),
        [kv] => text_key_value(kv).map(Some),
        more => Err(format!("{} keys for a get of one key", more.len())),
    }
}

/// `key` without `dir` in front (`dir` ends with `/`).
pub(crate) fn suffix_after(dir: &str, key: &str) -> Result<String, Odd> {
    match key.strip_prefix(dir) {
        Some(suffix) if !suffix.is_empty() => Ok(suffix.to_owned()),
        _ => Err(format!("key {key} is not under {dir}")),
    }
}

fn text(what: &str, bytes: &[u8]) -> Result<String, Odd> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        format!(
            "{what} is not UTF-8 ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbRangeResponse, PbResponseOp};

    fn kv(key: &[u8], value: &[u8]) -> PbKeyValue {
        PbKeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: 5,
            mod_revision: 7,
            version: 2,
            lease: 9,
        }
    }

    #[test]
    fn a_missing_header_or_revision_is_an_odd_answer() {
        assert!(revision(None).is_err());
        let header = PbResponseHeader::default();
        assert!(revision(Some(&header)).is_err());
        let header = PbResponseHeader {
            revision: 12,
            ..Default::default()
        };
        assert_eq!(revision(Some(&header)), Ok(12));
    }

    #[test]
    fn missing_or_empty_transaction_results_are_odd_answers() {
        let mut txn = PbTxnResponse::default();
        assert!(txn_range(&txn, 0).unwrap_err().contains("0 results"));
        txn.responses.push(PbResponseOp { response: None });
        assert!(txn_range(&txn, 0).is_err());
        txn.responses[0].response = Some(PbTxnOpResponse::ResponseRange(PbRangeResponse {
            kvs: vec![kv(b"k", b"v")],
            ..Default::default()
        }));
        assert_eq!(txn_range(&txn, 0).unwrap().len(), 1);
    }

    #[test]
    fn non_utf8_and_surplus_keys_are_odd_answers() {
        assert!(
            at_most_one(&[kv(b"k", b"\xff")])
                .unwrap_err()
                .contains("value of k")
        );
        assert!(at_most_one(&[kv(b"a", b"1"), kv(b"b", b"2")]).is_err());
        assert_eq!(at_most_one(&[]), Ok(None));
        let one = at_most_one(&[kv(b"k", b"v")]).unwrap().unwrap();
        assert_eq!((one.key.as_str(), one.value.as_str()), ("k", "v"));
        assert_eq!(
            (one.create_revision, one.mod_revision, one.lease),
            (5, 7, 9)
        );
    }

    #[test]
    fn suffixes_are_taken_only_under_the_directory() {
        assert_eq!(
            suffix_after("/t/ag/", "/t/ag/leader"),
            Ok("leader".to_owned())
        );
        assert!(suffix_after("/t/ag/", "/t/ag2/leader").is_err());
        assert!(suffix_after("/t/ag/", "/t/ag/").is_err());
    }
}
