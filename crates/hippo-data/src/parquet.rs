//! The `text` column of a Hugging Face `wikitext` Parquet file (pure Rust, no Arrow).

use std::path::Path;

#[cfg(feature = "parquet")]
use parquet::file::reader::{FileReader, SerializedFileReader};
#[cfg(feature = "parquet")]
use parquet::record::Field;

use super::error::{DataError, Result};

/// Without the `parquet` feature a `wikitext-hf:` corpus is refused with this error.
#[cfg(not(feature = "parquet"))]
pub fn read_text_column(path: &Path, _bytes: &[u8]) -> Result<String> {
    Err(DataError::Parquet {
        path: path.to_path_buf(),
        message: "hippo-data was built without its `parquet` feature (enable it, or export the \
                  split to wiki.<split>.raw text and use `wikitext-raw:<dir>`)"
            .to_owned(),
    })
}

/// Concatenates the `text` column of every row of the Parquet file `bytes` (read from
/// `path`): in the Hugging Face `wikitext` export each row is one line of the raw file,
/// newline included, so the result is the raw text. Null rows count as empty lines.
///
/// Only uncompressed and Snappy-compressed files are supported (the Hugging Face default).
#[cfg(feature = "parquet")]
pub fn read_text_column(path: &Path, bytes: &[u8]) -> Result<String> {
    let err = |message: String| DataError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes)).map_err(|e| {
        err(format!(
            "{e} (export the split to wiki.<split>.raw text and use `wikitext-raw:<dir>`)"
        ))
    })?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let Some(col) = (0..schema.num_columns()).find(|&i| schema.column(i).name() == "text") else {
        let found: Vec<String> = (0..schema.num_columns())
            .map(|i| schema.column(i).name().to_owned())
            .collect();
        return Err(err(format!(
            "expected a `text` column, found columns {found:?}"
        )));
    };
    let projection = parquet::schema::types::Type::group_type_builder("schema")
        .with_fields(vec![schema.column(col).self_type_ptr()])
        .build()
        .map_err(|e| err(e.to_string()))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| err(e.to_string()))?;
    let mut text = String::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| err(format!("row {i}: {e}")))?;
        for (_, field) in row.get_column_iter() {
            match field {
                Field::Str(s) => text.push_str(s),
                Field::Null => {}
                other => {
                    return Err(err(format!(
                        "row {i}: expected a string in `text`, found {other:?}"
                    )));
                }
            }
        }
    }
    Ok(text)
}
