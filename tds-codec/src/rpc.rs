//! RPC request ([MS-TDS] 2.2.6.6), decoded to the extent `sp_executesql` needs.
//!
//! Drivers send parameterised queries as an RPC to the special procedure `sp_executesql`
//! (ProcID 10): parameter 1 is the statement, 2 the parameter declarations, the rest the
//! values (`@P1`...). python-tds and tiberius both do this, so the simulator must read
//! parameters of any ordinary type to find the statement text and the values it refers to.
//! Several calls may be batched in one request, separated by a batch flag byte.

use crate::all_headers::AllHeaders;
use crate::cursor::{Cursor, put_b_varchar};
use crate::types::{TypeInfo, Value, encode_value};
use crate::{CodecError, ucs2};

/// Well-known procedure ids ([MS-TDS] 2.2.6.6, ProcID).
pub mod proc_id {
    pub const SP_CURSOR: u16 = 1;
    pub const SP_EXECUTESQL: u16 = 10;
    pub const SP_PREPARE: u16 = 11;
    pub const SP_EXECUTE: u16 = 12;
    pub const SP_PREPEXEC: u16 = 13;
    pub const SP_UNPREPARE: u16 = 15;
}

/// Separates calls: 0x80 before TDS 7.2, 0xFF from 7.2, 0xFE (NoExec) from 7.4.
const BATCH_FLAG_71: u8 = 0x80;
const BATCH_FLAG_72: u8 = 0xFF;
const NO_EXEC_FLAG: u8 = 0xFE;
/// More calls or parameters than any driver sends in one request is hostile.
const MAX_CALLS: usize = 64;
const MAX_PARAMS: usize = 2100; // SQL Server's own parameter limit.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proc {
    Id(u16),
    Name(String),
}

impl Proc {
    /// True for `sp_executesql` whether called by id or by name.
    pub fn is_executesql(&self) -> bool {
        match self {
            Proc::Id(id) => *id == proc_id::SP_EXECUTESQL,
            Proc::Name(n) => {
                let n = n
                    .trim()
                    .trim_start_matches("sys.")
                    .trim_start_matches("dbo.");
                n.eq_ignore_ascii_case("sp_executesql")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// With its leading `@`, or empty for a positional parameter.
    pub name: String,
    /// fByRefValue 0x01 (output), fDefaultValue 0x02.
    pub status: u8,
    pub ty: TypeInfo,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcCall {
    pub proc: Proc,
    pub option_flags: u16,
    pub params: Vec<Param>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    pub headers: Option<AllHeaders>,
    pub calls: Vec<RpcCall>,
}

fn is_separator(b: u8, v72: bool) -> bool {
    if v72 {
        b == BATCH_FLAG_72 || b == NO_EXEC_FLAG
    } else {
        b == BATCH_FLAG_71
    }
}

impl RpcRequest {
    /// `v72`: the negotiated version is 7.2+ (ALL_HEADERS present, 0xFF batch flag).
    pub fn decode(payload: &[u8], v72: bool) -> Result<Self, CodecError> {
        let (headers, used) = if v72 {
            let (h, used) = AllHeaders::decode(payload)?;
            (Some(h), used)
        } else {
            (None, 0)
        };
        let mut c = Cursor::new(&payload[used..]);
        let mut calls = Vec::new();
        while !c.is_empty() {
            if calls.len() == MAX_CALLS {
                return Err(CodecError::invalid(
                    "RPC",
                    "more than 64 calls in one request",
                ));
            }
            let name_len = c.u16_le("RPC NameLenProcID")?;
            let proc = if name_len == 0xFFFF {
                Proc::Id(c.u16_le("RPC ProcID")?)
            } else {
                Proc::Name(ucs2::decode(
                    "RPC ProcName",
                    c.bytes("RPC ProcName", name_len as usize * 2)?,
                )?)
            };
            let option_flags = c.u16_le("RPC OptionFlags")?;
            let mut params = Vec::new();
            loop {
                match c.rest().first() {
                    None => break,
                    Some(&b) if is_separator(b, v72) => {
                        c.u8("RPC BatchFlag")?;
                        break;
                    }
                    Some(_) => {}
                }
                if params.len() == MAX_PARAMS {
                    return Err(CodecError::invalid("RPC", "more than 2100 parameters"));
                }
                let name = c.b_varchar("RPC ParamName")?;
                let status = c.u8("RPC StatusFlags")?;
                let ty = TypeInfo::decode_from(&mut c)?;
                let value = ty.decode_value(&mut c)?;
                params.push(Param {
                    name,
                    status,
                    ty,
                    value,
                });
            }
            calls.push(RpcCall {
                proc,
                option_flags,
                params,
            });
        }
        if calls.is_empty() {
            return Err(CodecError::invalid("RPC", "no procedure call"));
        }
        Ok(RpcRequest { headers, calls })
    }

    /// Encodes the request; parameter values are limited to what [`encode_value`] writes
    /// (INTN and NVARCHAR), which is enough for tests and fuzz seeds.
    pub fn encode(&self, v72: bool) -> Result<Vec<u8>, CodecError> {
        let mut out = if v72 {
            let h = self.headers.clone().unwrap_or_default();
            AllHeaders::encode_transaction(
                h.transaction_descriptor.unwrap_or(0),
                h.outstanding_requests.unwrap_or(1),
            )
        } else {
            Vec::new()
        };
        for (i, call) in self.calls.iter().enumerate() {
            if i > 0 {
                out.push(if v72 { BATCH_FLAG_72 } else { BATCH_FLAG_71 });
            }
            match &call.proc {
                Proc::Id(id) => {
                    out.extend_from_slice(&0xFFFFu16.to_le_bytes());
                    out.extend_from_slice(&id.to_le_bytes());
                }
                Proc::Name(n) => {
                    out.extend_from_slice(&(ucs2::units(n) as u16).to_le_bytes());
                    out.extend_from_slice(&ucs2::encode(n));
                }
            }
            out.extend_from_slice(&call.option_flags.to_le_bytes());
            for p in &call.params {
                put_b_varchar(&mut out, &p.name);
                out.push(p.status);
                p.ty.encode_into(&mut out);
                encode_value(&p.ty, &p.value, &mut out)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn executesql(stmt: &str, params: Vec<Param>) -> RpcRequest {
        let mut all = vec![
            Param {
                name: String::new(),
                status: 0,
                ty: TypeInfo::nvarchar(4000),
                value: Value::Text(stmt.into()),
            },
            Param {
                name: String::new(),
                status: 0,
                ty: TypeInfo::nvarchar(4000),
                value: Value::Text("@P1 nvarchar(4000)".into()),
            },
        ];
        all.extend(params);
        RpcRequest {
            headers: Some(AllHeaders {
                transaction_descriptor: Some(0),
                outstanding_requests: Some(1),
                other_types: vec![],
            }),
            calls: vec![RpcCall {
                proc: Proc::Id(proc_id::SP_EXECUTESQL),
                option_flags: 0,
                params: all,
            }],
        }
    }

    #[test]
    fn golden_executesql_by_id() {
        let req = RpcRequest {
            headers: None,
            calls: vec![RpcCall {
                proc: Proc::Id(proc_id::SP_EXECUTESQL),
                option_flags: 0,
                params: vec![Param {
                    name: "@a".into(),
                    status: 0,
                    ty: TypeInfo::int_n(4),
                    value: Value::Int(7),
                }],
            }],
        };
        let bytes = req.encode(false).unwrap();
        assert_eq!(
            bytes,
            [
                0xFF, 0xFF, 0x0A, 0x00, // NameLenProcID = 0xFFFF, ProcID 10
                0x00, 0x00, // OptionFlags
                0x02, 0x40, 0x00, 0x61, 0x00, // B_VARCHAR "@a"
                0x00, // StatusFlags
                0x26, 0x04, // INTN(4)
                0x04, 0x07, 0x00, 0x00, 0x00, // value 7
            ]
        );
        assert_eq!(RpcRequest::decode(&bytes, false).unwrap(), req);
    }

    #[test]
    fn decodes_named_procs_and_batches() {
        let mut req = executesql(
            "SELECT @P1",
            vec![Param {
                name: "@P1".into(),
                status: 0,
                ty: TypeInfo::nvarchar(4000),
                value: Value::Text("AG1".into()),
            }],
        );
        req.calls.push(RpcCall {
            proc: Proc::Name("sp_executesql".into()),
            option_flags: 2,
            params: vec![],
        });
        let bytes = req.encode(true).unwrap();
        let back = RpcRequest::decode(&bytes, true).unwrap();
        assert_eq!(back, req);
        assert!(back.calls.iter().all(|c| c.proc.is_executesql()));
    }

    #[test]
    fn hostile_requests_are_errors() {
        assert!(RpcRequest::decode(&[], false).is_err());
        // A procedure name claiming 0x7FFF units.
        assert!(RpcRequest::decode(&[0xFF, 0x7F, 0x41], false).is_err());
        // An unsupported parameter type (UDT).
        assert!(RpcRequest::decode(&[0xFF, 0xFF, 10, 0, 0, 0, 0, 0, 0xF0], false).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), v72 in any::<bool>()) {
            let _ = RpcRequest::decode(&bytes, v72);
        }

        #[test]
        fn round_trip(stmt in ".{0,60}", v in any::<i32>(), s in "[a-zA-Z0-9 ']{0,20}") {
            let req = executesql(&stmt, vec![
                Param { name: "@P1".into(), status: 0, ty: TypeInfo::int_n(8), value: Value::Int(v as i64) },
                Param { name: "@P2".into(), status: 0, ty: TypeInfo::nvarchar(4000), value: Value::Text(s) },
            ]);
            prop_assert_eq!(RpcRequest::decode(&req.encode(true).unwrap(), true).unwrap(), req);
        }
    }
}
