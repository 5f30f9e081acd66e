//! Evaluates parsed `SELECT`s against the replica's virtual catalog (`catalog`).
//!
//! Joins are nested loops with an equality condition; filters are ANDed comparisons,
//! `IN` lists and `BETWEEN`; `COUNT`/`MAX`/`MIN` without `GROUP BY` fold the filtered rows
//! into one; text compares case-insensitively like the default collation.

use std::cmp::Ordering;
use std::collections::HashMap;

use tds_codec::token::Column;
use tds_codec::token::colmetadata::flags;
use tds_codec::types::Value;

use crate::sql::{AggFn, CmpOp, Expr, Item, Pred, Select, SqlError, TableRef};
use crate::state::Replica;

/// What a statement can see besides the catalog.
pub struct Env<'a> {
    pub replica: &'a Replica,
    pub ag: &'a crate::ag::Ag,
    pub spid: u16,
    pub database: &'a str,
    pub trancount: u32,
    /// The session's login, as the server spells it.
    pub user: &'a str,
    /// Every login and its permissions (`access` checks them).
    pub logins: &'a crate::perms::Logins,
    pub version: String,
    pub product_version: tds_codec::Version,
    /// `sp_executesql` parameters by lowercased name.
    pub params: &'a HashMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

use crate::catalog::{Table, Ty, table, text};

struct Bound {
    /// The alias, or the table's own name when it has none.
    name: String,
    table: Table,
}

/// Finds `parts` (`[alias.]column`) among the bound tables.
fn resolve(parts: &[String], bound: &[Bound]) -> Result<(usize, usize), SqlError> {
    let written = parts.join(".");
    let (qualifier, col) = match parts {
        [col] => (None, col),
        [.., q, col] => (Some(q), col),
        [] => return Err(SqlError::invalid_column(&written)),
    };
    let mut found = None;
    for (ti, b) in bound.iter().enumerate() {
        if qualifier.is_some_and(|q| !q.eq_ignore_ascii_case(&b.name)) {
            continue;
        }
        if let Some(ci) = b
            .table
            .columns
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(col))
        {
            if found.is_some() {
                return Err(SqlError::new(
                    209,
                    16,
                    format!("Ambiguous column name '{col}'."),
                ));
            }
            found = Some((ti, ci));
        }
    }
    match (found, qualifier) {
        (Some(f), _) => Ok(f),
        (None, Some(q)) if !bound.iter().any(|b| b.name.eq_ignore_ascii_case(q)) => {
            Err(SqlError::new(
                4104,
                16,
                format!("The multi-part identifier \"{written}\" could not be bound."),
            ))
        }
        (None, _) => Err(SqlError::invalid_column(col)),
    }
}

/// Type, nullability, name and value of an expression in one row (`row` is `None` when
/// there is no FROM clause).
fn eval(
    e: &Expr,
    env: &Env<'_>,
    bound: &[Bound],
    row: &[&Vec<Value>],
) -> Result<(Ty, bool, String, Value), SqlError> {
    Ok(match e {
        Expr::Int(n) => {
            let ty = if i32::try_from(*n).is_ok() {
                Ty::Int(4)
            } else {
                Ty::Int(8)
            };
            (ty, false, String::new(), Value::Int(*n))
        }
        Expr::Str(s) => {
            let units = s.encode_utf16().count().clamp(1, 4000) as u16;
            (Ty::NVarChar(units), false, String::new(), text(s))
        }
        Expr::Null => (Ty::Int(4), true, String::new(), Value::Null),
        Expr::Global(g) => {
            let (ty, v) = match g.as_str() {
                "servername" => (Ty::NVarChar(128), text(&env.replica.server_name)),
                "servicename" => (Ty::NVarChar(128), text("MSSQLSERVER")),
                "version" => (Ty::NVarChar(300), text(&env.version)),
                "spid" => (Ty::Int(2), Value::Int(env.spid as i64)),
                "trancount" => (Ty::Int(4), Value::Int(env.trancount as i64)),
                "language" => (Ty::NVarChar(128), text("us_english")),
                "error" | "rowcount" | "procid" | "nestlevel" | "langid" => {
                    (Ty::Int(4), Value::Int(0))
                }
                "max_precision" => (Ty::Int(1), Value::Int(38)),
                "datefirst" => (Ty::Int(1), Value::Int(7)),
                "textsize" => (Ty::Int(4), Value::Int(2_147_483_647)),
                "lock_timeout" => (Ty::Int(4), Value::Int(-1)),
                // ANSI_WARNINGS, ANSI_PADDING, ANSI_NULLS, CONCAT_NULL_YIELDS_NULL,
                // QUOTED_IDENTIFIER, ANSI_NULL_DFLT_ON, ARITHABORT: what drivers set.
                "options" => (Ty::Int(4), Value::Int(5176)),
                "identity" => (Ty::Int(8), Value::Null),
                "max_connections" => (Ty::Int(4), Value::Int(32767)),
                "microsoftversion" => {
                    let v = env.product_version;
                    let n = ((v.major as i64) << 24) | ((v.minor as i64) << 16) | v.build as i64;
                    (Ty::Int(4), Value::Int(n))
                }
                _ => return Err(SqlError::undeclared(&format!("@@{g}"))),
            };
            (ty, true, String::new(), v)
        }
        Expr::Var(v) => {
            let Some(val) = env.params.get(&v.to_lowercase()) else {
                return Err(SqlError::undeclared(v));
            };
            let ty = match val {
                Value::Int(_) | Value::Null => Ty::Int(8),
                Value::Bit(_) => Ty::Int(1),
                Value::Text(_) => Ty::NVarChar(4000),
                _ => {
                    return Err(SqlError::new(
                        206,
                        16,
                        format!("Operand type clash: the type of {v} is not supported by tds-sim."),
                    ));
                }
            };
            let val = match val {
                Value::Bit(b) => Value::Int(*b as i64),
                other => other.clone(),
            };
            (ty, true, String::new(), val)
        }
        Expr::Func(f, args) => crate::func::call(f, args, env, &mut |a| eval(a, env, bound, row))?,
        Expr::Cast(e, ty) => crate::func::cast(eval(e, env, bound, row)?, ty)?,
        Expr::Agg(..) => {
            return Err(SqlError::new(
                147,
                15,
                "An aggregate may not appear in the WHERE clause unless it is in a subquery contained in a HAVING clause or a select list.",
            ));
        }
        Expr::Column(parts) => {
            let (ti, ci) = resolve(parts, bound)?;
            let (name, ty) = bound[ti].table.columns[ci];
            let v = row
                .get(ti)
                .and_then(|r| r.get(ci))
                .cloned()
                .unwrap_or(Value::Null);
            (ty, true, name.to_string(), v)
        }
    })
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) => Some(x.to_lowercase().cmp(&y.to_lowercase())),
        (Value::Int(x), Value::Text(y)) => y.trim().parse::<i64>().ok().map(|y| x.cmp(&y)),
        (Value::Text(x), Value::Int(y)) => x.trim().parse::<i64>().ok().map(|x| x.cmp(y)),
        _ => None,
    }
}

fn test(p: &Pred, env: &Env<'_>, bound: &[Bound], row: &[&Vec<Value>]) -> Result<bool, SqlError> {
    Ok(match p {
        Pred::Cmp(a, op, b) => {
            let a = eval(a, env, bound, row)?.3;
            let b = eval(b, env, bound, row)?.3;
            match compare(&a, &b) {
                None => false,
                Some(o) => match op {
                    CmpOp::Eq => o == Ordering::Equal,
                    CmpOp::Ne => o != Ordering::Equal,
                    CmpOp::Lt => o == Ordering::Less,
                    CmpOp::Le => o != Ordering::Greater,
                    CmpOp::Gt => o == Ordering::Greater,
                    CmpOp::Ge => o != Ordering::Less,
                },
            }
        }
        Pred::In {
            expr,
            list,
            negated,
        } => {
            let v = eval(expr, env, bound, row)?.3;
            if v == Value::Null {
                return Ok(false);
            }
            let mut hit = false;
            for e in list {
                let w = eval(e, env, bound, row)?.3;
                hit |= compare(&v, &w) == Some(Ordering::Equal);
            }
            hit != *negated
        }
        Pred::Between { expr, low, high } => {
            let v = eval(expr, env, bound, row)?.3;
            let lo = eval(low, env, bound, row)?.3;
            let hi = eval(high, env, bound, row)?.3;
            compare(&v, &lo).is_some_and(|o| o != Ordering::Less)
                && compare(&v, &hi).is_some_and(|o| o != Ordering::Greater)
        }
    })
}

/// Evaluates a predicate outside any SELECT (the condition of an IF).
pub fn condition(p: &Pred, env: &Env<'_>) -> Result<bool, SqlError> {
    test(p, env, &[], &[])
}

fn bind(t: &TableRef, env: &Env<'_>) -> Result<Bound, SqlError> {
    let table = table(&t.key, env).ok_or_else(|| SqlError::invalid_object(&t.written))?;
    crate::access::check_table(&t.key, env)?;
    let name = t
        .alias
        .clone()
        .unwrap_or_else(|| t.key.rsplit('.').next().unwrap_or("").to_string());
    Ok(Bound { name, table })
}

pub fn select(s: &Select, env: &Env<'_>) -> Result<ResultSet, SqlError> {
    // Bind tables and produce the joined rows (indices into each table's rows).
    let mut bound = Vec::new();
    let mut combos: Vec<Vec<usize>> = vec![vec![]];
    if let Some((first, joins)) = &s.from {
        bound.push(bind(first, env)?);
        combos = (0..bound[0].table.rows.len()).map(|i| vec![i]).collect();
        for j in joins {
            bound.push(bind(&j.table, env)?);
            let ti = bound.len() - 1;
            let mut next = Vec::new();
            for c in &combos {
                for ri in 0..bound[ti].table.rows.len() {
                    let mut cand = c.clone();
                    cand.push(ri);
                    let rows = rows_of(&bound, &cand);
                    if test(
                        &crate::sql::Pred::Cmp(j.on.0.clone(), CmpOp::Eq, j.on.1.clone()),
                        env,
                        &bound,
                        &rows,
                    )? {
                        next.push(cand);
                    }
                }
            }
            combos = next;
        }
    }
    // Resolve the projection once, so a bad column is an error even with zero rows.
    let empty: Vec<Vec<Value>> = bound
        .iter()
        .map(|b| vec![Value::Null; b.table.columns.len()])
        .collect();
    let empty_refs: Vec<&Vec<Value>> = empty.iter().collect();
    let mut exprs: Vec<(Expr, Option<String>)> = Vec::new();
    for item in &s.items {
        match item {
            Item::Star => {
                if bound.is_empty() {
                    return Err(SqlError::new(263, 16, "Must specify table to select from."));
                }
                for b in &bound {
                    for (c, _) in &b.table.columns {
                        exprs.push((Expr::Column(vec![b.name.clone(), c.to_string()]), None));
                    }
                }
            }
            Item::Expr { expr, alias } => exprs.push((expr.clone(), alias.clone())),
        }
    }
    let aggregated = exprs.iter().any(|(e, _)| matches!(e, Expr::Agg(..)));
    let mut columns = Vec::new();
    for (e, alias) in &exprs {
        let (ty, nullable, name, _) = match e {
            Expr::Agg(f, arg) => agg_type(*f, arg.as_deref(), env, &bound, &empty_refs)?,
            Expr::Column(_) if aggregated => {
                return Err(SqlError::new(
                    8120,
                    16,
                    "Column is invalid in the select list because it is not contained in either an aggregate function or the GROUP BY clause.",
                ));
            }
            _ => eval(e, env, &bound, &empty_refs)?,
        };
        let fl = if nullable { flags::NULLABLE } else { 0 };
        columns.push(Column::new(
            alias.as_deref().unwrap_or(&name),
            ty.info(),
            fl,
        ));
    }
    for p in &s.filter {
        test(p, env, &bound, &empty_refs)?;
    }

    let mut kept = Vec::new();
    for c in &combos {
        let rows = rows_of(&bound, c);
        let mut ok = true;
        for p in &s.filter {
            ok &= test(p, env, &bound, &rows)?;
        }
        if ok {
            kept.push(c.clone());
        }
    }
    if !s.order_by.is_empty() {
        let mut keyed = Vec::new();
        for c in kept {
            let rows = rows_of(&bound, &c);
            let mut key = Vec::new();
            for (e, _) in &s.order_by {
                key.push(eval(e, env, &bound, &rows)?.3);
            }
            keyed.push((key, c));
        }
        keyed.sort_by(|(a, _), (b, _)| {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let o = compare(x, y).unwrap_or(Ordering::Equal);
                let o = if s.order_by[i].1 { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        kept = keyed.into_iter().map(|(_, c)| c).collect();
    }
    if aggregated {
        let mut row = Vec::new();
        for (e, _) in &exprs {
            row.push(match e {
                Expr::Agg(f, arg) => fold(*f, arg.as_deref(), env, &bound, &kept)?,
                other => eval(other, env, &bound, &empty_refs)?.3,
            });
        }
        return Ok(ResultSet {
            columns,
            rows: vec![row],
        });
    }
    if let Some(n) = s.top {
        kept.truncate(n.max(0) as usize);
    }
    let mut out_rows = Vec::new();
    for c in &kept {
        let rows = rows_of(&bound, c);
        let mut out = Vec::new();
        for (e, _) in &exprs {
            out.push(eval(e, env, &bound, &rows)?.3);
        }
        out_rows.push(out);
    }
    Ok(ResultSet {
        columns,
        rows: out_rows,
    })
}

/// Type, nullability and name of an aggregate's column.
fn agg_type(
    f: AggFn,
    arg: Option<&Expr>,
    env: &Env<'_>,
    bound: &[Bound],
    empty: &[&Vec<Value>],
) -> Result<(Ty, bool, String, Value), SqlError> {
    match (f, arg) {
        (AggFn::Count, _) => Ok((Ty::Int(4), false, String::new(), Value::Null)),
        (_, Some(e)) => {
            let (ty, _, _, _) = eval(e, env, bound, empty)?;
            Ok((ty, true, String::new(), Value::Null))
        }
        (_, None) => Err(SqlError::syntax_near("*")),
    }
}

/// Folds an aggregate over the kept rows.
fn fold(
    f: AggFn,
    arg: Option<&Expr>,
    env: &Env<'_>,
    bound: &[Bound],
    kept: &[Vec<usize>],
) -> Result<Value, SqlError> {
    let Some(e) = arg else {
        return Ok(Value::Int(kept.len() as i64));
    };
    let mut values = Vec::new();
    for c in kept {
        let v = eval(e, env, bound, &rows_of(bound, c))?.3;
        if v != Value::Null {
            values.push(v);
        }
    }
    let pick = |want: Ordering| {
        values
            .iter()
            .cloned()
            .reduce(|a, b| if compare(&b, &a) == Some(want) { b } else { a })
            .unwrap_or(Value::Null)
    };
    Ok(match f {
        AggFn::Count => Value::Int(values.len() as i64),
        AggFn::Max => pick(Ordering::Greater),
        AggFn::Min => pick(Ordering::Less),
    })
}

fn rows_of<'b>(bound: &'b [Bound], combo: &[usize]) -> Vec<&'b Vec<Value>> {
    combo
        .iter()
        .zip(bound)
        .filter_map(|(ri, b)| b.table.rows.get(*ri))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Stmt, parse_batch};
    use crate::state::{DbState, Fault, Health, Role};
    use tds_codec::types::TypeInfo;

    fn replica() -> Replica {
        Replica {
            server_name: "SQL1".into(),
            ag: "AG1".into(),
            role: Role::Primary,
            health: Health::Healthy,
            databases: vec![
                ("db1".into(), DbState::Online),
                ("db2".into(), DbState::Restoring),
            ],
            fault: Fault::None,
            delay_ms: 0,
            changed_at_unix_ms: 0,
            kill_epoch: 0,
            shutting_down: false,
        }
    }

    fn run(sql: &str, r: &Replica) -> Result<Vec<ResultSet>, SqlError> {
        let params = HashMap::from([("@p1".to_string(), Value::Text("AG1".into()))]);
        let ag = crate::ag::Ag::new(Default::default(), crate::repl::log::Log::memory(), 0);
        ag.update(|s| {
            for (lsn, id) in [(1u64, 10i64), (2, 20), (3, 30)] {
                s.log
                    .append(crate::repl::codec::Record {
                        lsn,
                        epoch: 1,
                        commit_unix_ms: 1,
                        rows: vec![(id, id * 2)],
                    })
                    .unwrap();
            }
        });
        let env = Env {
            replica: r,
            ag: &ag,
            spid: 51,
            database: "master",
            trancount: 0,
            user: "u",
            logins: &crate::perms::Logins::new(("u", "p"), &[]).unwrap(),
            version: "v".into(),
            product_version: tds_codec::Version {
                major: 16,
                minor: 0,
                build: 1000,
                sub_build: 0,
            },
            params: &params,
        };
        parse_batch(sql)?
            .iter()
            .map(|s| match s {
                Stmt::Select(s) => select(s, &env),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    const HEALTH: &str = "SELECT @@SERVERNAME AS server_name, ars.role_desc AS role_desc, ars.synchronization_health_desc AS synchronization_health_desc FROM sys.dm_hadr_availability_replica_states AS ars JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id WHERE ars.is_local = 1 AND ag.name = N'AG1'; SELECT name, state_desc FROM sys.databases WHERE name IN (N'db1', N'db2', N'nope');";

    #[test]
    fn health_query_answers_like_the_replica() {
        let sets = run(HEALTH, &replica()).unwrap();
        assert_eq!(
            sets[0].rows,
            vec![vec![text("SQL1"), text("PRIMARY"), text("HEALTHY")]]
        );
        let names: Vec<&str> = sets[0].columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["server_name", "role_desc", "synchronization_health_desc"]
        );
        assert_eq!(sets[0].columns[1].ty, TypeInfo::nvarchar(60));
        assert_eq!(
            sets[1].rows,
            vec![
                vec![text("db1"), text("ONLINE")],
                vec![text("db2"), text("RESTORING")]
            ]
        );
        // Another AG: zero rows, same columns.
        let other = run(&HEALTH.replace("N'AG1'", "N'ag2'"), &replica()).unwrap();
        assert!(other[0].rows.is_empty());
        assert_eq!(other[0].columns.len(), 3);
        // AG names compare case-insensitively, parameters stand for literals.
        assert_eq!(
            run(&HEALTH.replace("N'AG1'", "N'ag1'"), &replica()).unwrap()[0]
                .rows
                .len(),
            1
        );
        assert_eq!(
            run(&HEALTH.replace("N'AG1'", "@P1"), &replica()).unwrap()[0]
                .rows
                .len(),
            1
        );
    }

    #[test]
    fn scalars_and_errors() {
        let r = replica();
        let s = run("SELECT 1", &r).unwrap();
        assert_eq!(s[0].columns[0].ty, TypeInfo::int_n(4));
        assert_eq!(s[0].rows, vec![vec![Value::Int(1)]]);
        assert_eq!(
            run("SELECT @@SPID", &r).unwrap()[0].columns[0].ty,
            TypeInfo::int_n(2)
        );
        assert_eq!(
            run("SELECT name FROM sys.databases", &r).unwrap()[0]
                .rows
                .len(),
            2
        );
        assert_eq!(run("SELECT * FROM sys.tables", &r).unwrap_err().number, 208);
        assert_eq!(
            run("SELECT nope FROM sys.databases", &r)
                .unwrap_err()
                .number,
            207
        );
        assert_eq!(
            run("SELECT x.name FROM sys.databases d", &r)
                .unwrap_err()
                .number,
            4104
        );
        assert_eq!(run("SELECT @undeclared", &r).unwrap_err().number, 137);
        let agg = run(
            "SELECT COUNT(*), MAX(id), MIN(at) FROM dbo.ledger; SELECT id FROM dbo.ledger WHERE id BETWEEN 15 AND 30 ORDER BY id DESC; SELECT COUNT(*), MAX(id) FROM dbo.ledger WHERE id > 99",
            &r,
        )
        .unwrap();
        assert_eq!(
            agg[0].rows,
            vec![vec![Value::Int(3), Value::Int(30), Value::Int(20)]]
        );
        assert_eq!(
            agg[1].rows,
            vec![vec![Value::Int(30)], vec![Value::Int(20)]]
        );
        assert_eq!(agg[2].rows, vec![vec![Value::Int(0), Value::Null]]);
        assert_eq!(
            run("SELECT id, COUNT(*) FROM dbo.ledger", &r)
                .unwrap_err()
                .number,
            8120
        );
        assert_eq!(
            run("SELECT id FROM dbo.ledger WHERE COUNT(*) > 1", &r)
                .unwrap_err()
                .number,
            147
        );
        assert_eq!(
            run("SELECT @@MAX_PRECISION, @@OPTIONS, @@DATEFIRST", &r).unwrap()[0].rows,
            vec![vec![Value::Int(38), Value::Int(5176), Value::Int(7)]]
        );
        let top = run(
            "SELECT TOP 1 name FROM sys.databases ORDER BY name DESC",
            &r,
        )
        .unwrap();
        assert_eq!(top[0].rows, vec![vec![text("db2")]]);
    }
}
