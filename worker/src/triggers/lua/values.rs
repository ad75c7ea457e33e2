//! Values between the database and Lua. Rows travel as JSON (`to_jsonb`),
//! so every column type arrives in a form Lua has: numbers, strings
//! (timestamps in ISO 8601), booleans, tables; SQL null is Lua nil.

use mlua::serde::{DeserializeOptions, SerializeOptions};
use mlua::{Lua, LuaSerdeExt, Value};
use serde_json::{Map, Value as Json};

/// A JSON value as a Lua value; null becomes nil. Arrays get mlua's
/// array metatable, so an empty one goes back as `[]`, not `{}`.
pub fn to_lua(lua: &Lua, json: &Json) -> mlua::Result<Value> {
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.to_value_with(json, options)
}

/// A Lua value as JSON: a table is an array when it is a sequence, else
/// an object; functions and other things JSON cannot hold are an error.
/// Whole floats become integers, as Lua 5.4 arithmetic makes floats of
/// what a script means as numbers (`2 / 1`).
pub fn from_lua(lua: &Lua, value: Value) -> mlua::Result<Json> {
    let options = DeserializeOptions::new().deny_recursive_tables(true);
    let json: Json = lua.from_value_with(value, options)?;
    Ok(whole_floats_as_integers(json))
}

fn whole_floats_as_integers(json: Json) -> Json {
    match json {
        Json::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Json::from(f as i64)
            } else {
                Json::Number(n)
            }
        }
        Json::Array(items) => {
            Json::Array(items.into_iter().map(whole_floats_as_integers).collect())
        }
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| (k, whole_floats_as_integers(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The fields a script changed: `before` is the message as read (every
/// column, nulls included), `after` the table `process` left. A field set
/// to nil is null; a field the message does not have is an error, as is a
/// change of its id.
pub fn changes(before: &Map<String, Json>, after: &Json) -> Result<Map<String, Json>, String> {
    let Json::Object(after) = after else {
        return Err("the message is no longer a table".to_owned());
    };
    if let Some(unknown) = after.keys().find(|k| !before.contains_key(*k)) {
        return Err(format!("the message has no field {unknown:?}"));
    }
    let mut changed = Map::new();
    for (field, old) in before {
        let new = after.get(field).unwrap_or(&Json::Null);
        if new != old {
            if field == "id" {
                return Err("message.id cannot be changed".to_owned());
            }
            changed.insert(field.clone(), new.clone());
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_round_trip_keeps_values_and_drops_nulls() {
        let lua = Lua::new();
        let row =
            json!({"id": 7, "body": "hi", "valid_until": null, "custom": {"a": [1, 2.5, "x"]}});
        let value = to_lua(&lua, &row).unwrap();
        let table = value.as_table().unwrap();
        assert_eq!(table.get::<i64>("id").unwrap(), 7);
        assert!(table.get::<Value>("valid_until").unwrap().is_nil());
        let back = from_lua(&lua, value).unwrap();
        assert_eq!(
            back,
            json!({"id": 7, "body": "hi", "custom": {"a": [1, 2.5, "x"]}})
        );
    }

    #[test]
    fn whole_floats_become_integers() {
        let lua = Lua::new();
        let v: Value = lua.load("{ p = 4 / 2, q = 0.5 }").eval().unwrap();
        assert_eq!(from_lua(&lua, v).unwrap(), json!({"p": 2, "q": 0.5}));
    }

    #[test]
    fn functions_are_refused() {
        let lua = Lua::new();
        let v: Value = lua.load("{ f = print }").eval().unwrap();
        assert!(from_lua(&lua, v).is_err());
    }

    #[test]
    fn changes_are_what_differs_and_nil_is_null() {
        let before = object(json!({"id": 1, "status": "failed", "channel": "a", "custom": null}));
        let after = json!({"id": 1, "status": "scheduled", "custom": {"n": 1}});
        let changed = changes(&before, &after).unwrap();
        assert_eq!(
            Json::Object(changed),
            json!({"status": "scheduled", "channel": null, "custom": {"n": 1}})
        );
    }

    #[test]
    fn unknown_fields_and_a_new_id_are_refused() {
        let before = object(json!({"id": 1, "status": "failed"}));
        let e = changes(&before, &json!({"id": 1, "stauts": "x"})).unwrap_err();
        assert!(e.contains("\"stauts\""), "{e}");
        let e = changes(&before, &json!({"id": 2, "status": "failed"})).unwrap_err();
        assert!(e.contains("id"), "{e}");
    }
}
