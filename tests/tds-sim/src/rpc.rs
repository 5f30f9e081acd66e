//! RPC requests: `sp_executesql`, `sp_prepare`/`sp_prepexec`/`sp_execute`/`sp_unprepare`
//! (by id or name) and the named procedures the sim knows, with named or positional
//! parameters.
//!
//! Positional (unnamed) parameters are what jTDS and tedious send: the TDS spec allows a
//! parameter without a name, and SQL Server binds it by position — for `sp_executesql`
//! the statement, then the parameter definitions, then one value per declared
//! parameter, in the order `@params` declares them (the procedure's own leading
//! parameters bind by position even when named). A prepared handle comes back as a
//! RETURNVALUE token (encoded here: tds-codec has no encoder for it).

use std::collections::HashMap;

use tds_codec::rpc::{Param, Proc, RpcCall, RpcRequest, proc_id};
use tds_codec::token::DoneKind;
use tds_codec::token::done::{cur_cmd, status};
use tds_codec::types::{TypeInfo, Value, encode_value};

use crate::exec::{Exec, Outcome};
use crate::respond::Response;
use crate::sql::SqlError;

const RETURNVALUE: u8 = 0xAC;

/// The procedure a call names, lowercased without `sys.`/`dbo.`.
fn proc_name(p: &Proc) -> String {
    match p {
        Proc::Id(proc_id::SP_EXECUTESQL) => "sp_executesql".into(),
        Proc::Id(proc_id::SP_PREPARE) => "sp_prepare".into(),
        Proc::Id(proc_id::SP_EXECUTE) => "sp_execute".into(),
        Proc::Id(proc_id::SP_PREPEXEC) => "sp_prepexec".into(),
        Proc::Id(proc_id::SP_UNPREPARE) => "sp_unprepare".into(),
        Proc::Id(id) => format!("system procedure id {id}"),
        Proc::Name(n) => n
            .trim()
            .trim_start_matches("sys.")
            .trim_start_matches("dbo.")
            .to_ascii_lowercase(),
    }
}

/// Parameter names declared in an `@params` string such as `@P0 int, @P1 nvarchar(10)`.
pub fn declared_names(defs: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes: Vec<char> = defs.chars().collect();
    for (i, c) in bytes.iter().enumerate() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                push_name(&bytes[start..i], &mut out);
                start = i + 1;
            }
            _ => {}
        }
    }
    push_name(&bytes[start..], &mut out);
    out
}

fn push_name(part: &[char], out: &mut Vec<String>) {
    let s: String = part.iter().collect();
    if let Some(n) = s.split_whitespace().next().filter(|n| n.starts_with('@')) {
        out.push(n.to_lowercase());
    }
}

/// Binds a call's parameters: the named ones by name, the `fixed` leading positional
/// ones by the procedure's own order, the rest to `declared` names in order.
struct Bound {
    fixed: HashMap<String, Value>,
    values: HashMap<String, Value>,
}

fn bind(params: &[Param], fixed: &[&str], declared_from: Option<&str>) -> Result<Bound, SqlError> {
    let mut b = Bound {
        fixed: HashMap::new(),
        values: HashMap::new(),
    };
    let mut rest = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let name = p.name.to_lowercase();
        // The procedure's own parameters bind by position whatever their name: tedious
        // calls sp_executesql's first one `@statement`, and SQL Server runs it.
        match fixed.get(i) {
            Some(f) => {
                b.fixed.insert(f.to_string(), p.value.clone());
            }
            None if name.is_empty() => rest.push(p.value.clone()),
            None => {
                b.values.insert(name, p.value.clone());
            }
        }
    }
    let declared = match declared_from.and_then(|k| b.fixed.get(k)) {
        Some(Value::Text(defs)) => declared_names(defs),
        _ => Vec::new(),
    };
    if rest.len() > declared.len() {
        return Err(SqlError::new(
            8144,
            16,
            "Procedure or function has too many arguments specified.",
        ));
    }
    for (n, v) in declared.into_iter().zip(rest) {
        b.values.insert(n, v);
    }
    Ok(b)
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Text(t)) => Some(t.clone()),
        _ => None,
    }
}

fn missing(proc: &str, param: &str) -> SqlError {
    SqlError::new(
        201,
        16,
        format!(
            "Procedure or function '{proc}' expects parameter '{param}', which was not supplied."
        ),
    )
}

/// RETURNVALUE for an INT output parameter (MS-TDS 2.2.7.18).
pub fn return_value(out: &mut Vec<u8>, ordinal: u16, name: &str, v: i32, v72: bool) {
    out.push(RETURNVALUE);
    out.extend_from_slice(&ordinal.to_le_bytes());
    let units: Vec<u16> = name.encode_utf16().collect();
    out.push(units.len() as u8);
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.push(0x01); // an output parameter
    if v72 {
        out.extend_from_slice(&0u32.to_le_bytes());
    } else {
        out.extend_from_slice(&0u16.to_le_bytes());
    }
    out.extend_from_slice(&0u16.to_le_bytes()); // flags
    let ty = TypeInfo::int_n(4);
    ty.encode_into(out);
    // An INTN value always fits its declared width.
    let _ = encode_value(&ty, &Value::Int(v as i64), out);
}

impl Exec<'_> {
    /// Runs each call of an RPC request.
    pub fn rpc(
        &mut self,
        req: &RpcRequest,
        r: &mut Response,
    ) -> (Vec<&'static str>, Option<SqlError>) {
        let mut kinds = Vec::new();
        let mut first_error = None;
        for call in &req.calls {
            let (k, err) = self.call(call, r);
            kinds.extend(k);
            r.return_status(if err.is_some() { 1 } else { 0 });
            let st = if err.is_some() {
                status::ERROR
            } else {
                status::FINAL
            };
            r.done(DoneKind::DoneProc, st, cur_cmd::EXECUTE, 0);
            if let Some(e) = err {
                first_error.get_or_insert(e);
            }
        }
        (kinds, first_error)
    }

    fn call(&mut self, call: &RpcCall, r: &mut Response) -> (Vec<&'static str>, Option<SqlError>) {
        match self.call_inner(call, r) {
            Ok(k) => k,
            Err(e) => {
                r.error(&e);
                (vec!["rpc_error"], Some(e))
            }
        }
    }

    fn call_inner(
        &mut self,
        call: &RpcCall,
        r: &mut Response,
    ) -> Result<(Vec<&'static str>, Option<SqlError>), SqlError> {
        let name = proc_name(&call.proc);
        let v72 = r.v72();
        match name.as_str() {
            "sp_executesql" => {
                let b = bind(&call.params, &["@stmt", "@params"], Some("@params"))?;
                let stmt = text_of(b.fixed.get("@stmt")).ok_or_else(|| missing(&name, "@stmt"))?;
                Ok(self.run_text(&stmt, &b.values, DoneKind::DoneInProc, r))
            }
            "sp_prepare" | "sp_prepexec" => {
                let b = bind(
                    &call.params,
                    &["@handle", "@params", "@stmt"],
                    Some("@params"),
                )?;
                let stmt = text_of(b.fixed.get("@stmt")).ok_or_else(|| missing(&name, "@stmt"))?;
                let names = text_of(b.fixed.get("@params"))
                    .map(|d| declared_names(&d))
                    .unwrap_or_default();
                let handle = self.session.next_handle;
                self.session.next_handle += 1;
                self.session.prepared.insert(handle, (stmt.clone(), names));
                let out = if name == "sp_prepexec" {
                    self.run_text(&stmt, &b.values, DoneKind::DoneInProc, r)
                } else {
                    (vec!["prepare"], None)
                };
                r.raw(|buf| return_value(buf, 0, "@handle", handle, v72));
                Ok(out)
            }
            "sp_execute" => {
                let handle = match call.params.first().map(|p| &p.value) {
                    Some(Value::Int(h)) => *h as i32,
                    _ => return Err(missing(&name, "@handle")),
                };
                let (stmt, names) =
                    self.session.prepared.get(&handle).cloned().ok_or_else(|| {
                        SqlError::new(
                            8179,
                            16,
                            format!("Could not find prepared statement with handle {handle}."),
                        )
                    })?;
                let mut values = HashMap::new();
                let mut positional = names.iter();
                for p in &call.params[1..] {
                    let key = if p.name.is_empty() {
                        positional.next().cloned()
                    } else {
                        Some(p.name.to_lowercase())
                    };
                    if let Some(k) = key {
                        values.insert(k, p.value.clone());
                    }
                }
                Ok(self.run_text(&stmt, &values, DoneKind::DoneInProc, r))
            }
            "sp_unprepare" => {
                if let Some(Value::Int(h)) = call.params.first().map(|p| &p.value) {
                    self.session.prepared.remove(&(*h as i32));
                }
                Ok((vec!["unprepare"], None))
            }
            _ => self.named_procedure(&name, call, r),
        }
    }

    /// A procedure called by name over RPC, through the same code as `EXEC`.
    fn named_procedure(
        &mut self,
        name: &str,
        call: &RpcCall,
        r: &mut Response,
    ) -> Result<(Vec<&'static str>, Option<SqlError>), SqlError> {
        let args: Vec<crate::sql::Arg> = Vec::new();
        let values: Vec<(Option<String>, Value)> = call
            .params
            .iter()
            .map(|p| {
                (
                    (!p.name.is_empty()).then(|| p.name.to_lowercase()),
                    p.value.clone(),
                )
            })
            .collect();
        let outcome = if name == "sp_set_session_context" {
            self.session_context(&values)?;
            Outcome::Quiet(cur_cmd::EXECUTE)
        } else {
            self.procedure(name, &args, &HashMap::new())?
        };
        if let Outcome::Rows(rs) = outcome {
            r.result(&rs).map_err(|e| {
                SqlError::new(50000, 16, format!("tds-sim could not encode a row: {e}"))
            })?;
            r.done(
                DoneKind::DoneInProc,
                status::COUNT,
                cur_cmd::SELECT,
                rs.rows.len() as u64,
            );
        }
        Ok((vec!["procedure"], None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_parameter_names() {
        assert_eq!(
            declared_names("@P0 int, @P1 nvarchar(4000),@p2 decimal(10, 2)"),
            ["@p0", "@p1", "@p2"]
        );
        assert!(declared_names("").is_empty());
    }

    #[test]
    fn positional_parameters_bind_in_declared_order() {
        let p = |name: &str, v: Value| Param {
            name: name.into(),
            status: 0,
            ty: TypeInfo::int_n(8),
            value: v,
        };
        let b = bind(
            &[
                p("", Value::Text("SELECT @a, @b".into())),
                p("", Value::Text("@a int, @b int".into())),
                p("", Value::Int(1)),
                p("", Value::Int(2)),
            ],
            &["@stmt", "@params"],
            Some("@params"),
        )
        .unwrap();
        assert_eq!(b.values.get("@a"), Some(&Value::Int(1)));
        assert_eq!(b.values.get("@b"), Some(&Value::Int(2)));
        assert!(
            bind(
                &[
                    p("", Value::Text("SELECT 1".into())),
                    p("", Value::Text("".into())),
                    p("", Value::Int(1))
                ],
                &["@stmt", "@params"],
                Some("@params")
            )
            .is_err()
        );
    }

    #[test]
    fn return_value_golden_bytes() {
        let mut b = Vec::new();
        return_value(&mut b, 0, "@h", 5, true);
        assert_eq!(
            b,
            [
                0xAC, 0, 0, 2, b'@', 0, b'h', 0, 0x01, 0, 0, 0, 0, 0, 0, 0x26, 4, 4, 5, 0, 0, 0
            ]
        );
    }
}
