//! Evaluates built-in function calls (`DB_NAME()`, `SUSER_SNAME()`,
//! `HAS_PERMS_BY_NAME(..)`) and `CAST` for `query`.
//!
//! `HAS_PERMS_BY_NAME` answers from the permission model (`perms`) as SQL Server documents
//! it: 1 when the caller holds the permission (directly or implied, and not denied), 0 when
//! not, NULL when the securable does not exist or the class or permission name is not
//! valid. `CAST` converts to the types a check query needs (NVARCHAR(n), INT, BIGINT) with
//! SQL Server's errors; any other real type is refused as not modelled.

use tds_codec::types::Value;

use crate::catalog::{Ty, text};
use crate::perms::{Class, Perm};
use crate::query::Env;
use crate::sql::{CastType, Expr, SqlError};

/// Type, nullability, column name and value of an expression.
pub(crate) type Typed = (Ty, bool, String, Value);

/// SQL Server's system type names: a CAST to one of these that tds-sim does not model is
/// "not modelled", to anything else error 243.
const SYSTEM_TYPES: &[&str] = &[
    "BIGINT",
    "BINARY",
    "BIT",
    "CHAR",
    "DATE",
    "DATETIME",
    "DATETIME2",
    "DATETIMEOFFSET",
    "DECIMAL",
    "FLOAT",
    "GEOGRAPHY",
    "GEOMETRY",
    "HIERARCHYID",
    "IMAGE",
    "INT",
    "MONEY",
    "NCHAR",
    "NTEXT",
    "NUMERIC",
    "NVARCHAR",
    "REAL",
    "SMALLDATETIME",
    "SMALLINT",
    "SMALLMONEY",
    "SQL_VARIANT",
    "SYSNAME",
    "TEXT",
    "TIME",
    "TIMESTAMP",
    "TINYINT",
    "UNIQUEIDENTIFIER",
    "VARBINARY",
    "VARCHAR",
    "XML",
];

fn not_modelled(what: String) -> SqlError {
    SqlError::new(50000, 16, format!("tds-sim does not model {what}."))
}

/// A function call; `eval` evaluates an argument in the caller's row.
pub(crate) fn call(
    name: &str,
    args: &[Expr],
    env: &Env<'_>,
    eval: &mut dyn FnMut(&Expr) -> Result<Typed, SqlError>,
) -> Result<Typed, SqlError> {
    let niladic = |v: Value| -> Result<Typed, SqlError> {
        if !args.is_empty() {
            return Err(not_modelled(format!("{name} with arguments")));
        }
        Ok((Ty::NVarChar(128), true, String::new(), v))
    };
    match name {
        "DB_NAME" => niladic(text(env.database)),
        "SUSER_SNAME" | "SUSER_NAME" => niladic(text(env.user)),
        "HAS_PERMS_BY_NAME" => {
            if !(3..=5).contains(&args.len()) {
                return Err(SqlError::new(
                    189,
                    15,
                    "The has_perms_by_name function requires 3 to 5 arguments.",
                ));
            }
            let mut values = Vec::new();
            for a in args {
                values.push(eval(a)?.3);
            }
            Ok((
                Ty::Int(4),
                true,
                String::new(),
                has_perms_by_name(&values, env),
            ))
        }
        _ => Err(SqlError::new(
            195,
            15,
            format!("'{name}' is not a recognized built-in function name."),
        )),
    }
}

/// `HAS_PERMS_BY_NAME(securable, securable_class, permission [, sub, sub_class])`.
fn has_perms_by_name(values: &[Value], env: &Env<'_>) -> Value {
    let as_text = |v: &Value| match v {
        Value::Text(t) => Some(t.clone()),
        _ => None,
    };
    // Sub-securables exist only for columns, which tds-sim does not model as securables.
    if values.iter().skip(3).any(|v| *v != Value::Null) {
        return Value::Null;
    }
    let Some(permission) = as_text(&values[2]) else {
        return Value::Null;
    };
    let class = as_text(&values[1]).map(|c| c.trim().to_ascii_uppercase());
    let (class, ag) = match (&values[0], class.as_deref()) {
        (Value::Null, None | Some("SERVER")) => (Class::Server, None),
        (Value::Text(name), Some("AVAILABILITY GROUP"))
            if name.eq_ignore_ascii_case(&env.replica.ag) =>
        {
            (Class::AvailabilityGroup, Some(env.replica.ag.as_str()))
        }
        _ => return Value::Null,
    };
    let held = if permission.trim().eq_ignore_ascii_case("ANY") {
        env.logins.has_any(env.user, class, ag, env.major())
    } else {
        match Perm::parse(permission.trim(), class, env.major()) {
            Some(p) => env.logins.has(env.user, p, ag),
            None => return Value::Null,
        }
    };
    Value::Int(held as i64)
}

/// `CAST(value AS ty)`.
pub(crate) fn cast(v: Typed, ty: &CastType) -> Result<Typed, SqlError> {
    let name = ty.name.as_str();
    let (target, value) = match name {
        "NVARCHAR" => {
            let n = match ty.length {
                None => 30,
                Some(None) => return Err(not_modelled("NVARCHAR(MAX)".to_string())),
                Some(Some(n)) if n < 1 => {
                    return Err(not_modelled(format!("a length of {n} for NVARCHAR")));
                }
                Some(Some(n)) if n > 4000 => {
                    return Err(SqlError::new(
                        131,
                        15,
                        format!(
                            "The size ({n}) given to the type 'nvarchar' exceeds the maximum allowed for any data type (4000)."
                        ),
                    ));
                }
                Some(Some(n)) => n as u16,
            };
            (Ty::NVarChar(n), to_nvarchar(v.3, n)?)
        }
        "INT" | "BIGINT" if ty.length.is_some() => {
            return Err(not_modelled(format!("a length for {name}")));
        }
        "INT" => (
            Ty::Int(4),
            to_int(v.3, "int", i32::MIN as i64, i32::MAX as i64)?,
        ),
        "BIGINT" => (Ty::Int(8), to_int(v.3, "bigint", i64::MIN, i64::MAX)?),
        _ if SYSTEM_TYPES.contains(&name) => {
            return Err(not_modelled(format!("CAST to {name}")));
        }
        _ => {
            return Err(SqlError::new(
                243,
                16,
                format!(
                    "Type {} is not a defined system type.",
                    ty.name.to_lowercase()
                ),
            ));
        }
    };
    Ok((target, true, String::new(), value))
}

fn overflow(ty: &str) -> SqlError {
    SqlError::new(
        8115,
        16,
        format!("Arithmetic overflow error converting expression to data type {ty}."),
    )
}

fn to_nvarchar(v: Value, n: u16) -> Result<Value, SqlError> {
    Ok(match v {
        Value::Null => Value::Null,
        Value::Int(i) => {
            let s = i.to_string();
            if s.len() > n as usize {
                return Err(overflow("nvarchar"));
            }
            Value::Text(s)
        }
        Value::Bit(b) => Value::Text(if b { "1" } else { "0" }.to_string()),
        Value::Text(t) => {
            // Truncated to n UTF-16 code units, never inside a character.
            let mut units = 0;
            let kept: String = t
                .chars()
                .take_while(|c| {
                    units += c.len_utf16();
                    units <= n as usize
                })
                .collect();
            Value::Text(kept)
        }
        _ => return Err(not_modelled("that conversion to NVARCHAR".to_string())),
    })
}

fn to_int(v: Value, ty: &str, min: i64, max: i64) -> Result<Value, SqlError> {
    let n = match v {
        Value::Null => return Ok(Value::Null),
        Value::Int(i) => i,
        Value::Bit(b) => b as i64,
        Value::Text(t) => match t.trim().parse::<i128>() {
            Ok(n) if ty == "int" && (n < min as i128 || n > max as i128) => {
                return Err(SqlError::new(
                    248,
                    16,
                    format!("The conversion of the nvarchar value '{t}' overflowed an int column."),
                ));
            }
            Ok(n) => i64::try_from(n).map_err(|_| overflow(ty))?,
            Err(_) => {
                return Err(SqlError::new(
                    245,
                    16,
                    format!(
                        "Conversion failed when converting the nvarchar value '{t}' to data type {ty}."
                    ),
                ));
            }
        },
        _ => return Err(not_modelled(format!("that conversion to {ty}"))),
    };
    if n < min || n > max {
        return Err(overflow(ty));
    }
    Ok(Value::Int(n))
}
