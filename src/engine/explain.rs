//! Reasons, on the worker that scored the batch: once a batch's scores are in, the rows whose
//! request asked for reasons at that score are occluded group by group (the package's method,
//! `model::explain`) and scored together in one more pass of the same model, in chunks of at most
//! one batch's rows. Rows that need no reasons cost nothing.

use super::batch::{Batch, Explained};
use crate::model::explain::Occlusion;

/// Buffers reused across batches.
#[derive(Default)]
pub(super) struct Scratch {
    numeric: Vec<f32>,
    categorical: Vec<u32>,
    out: Vec<f32>,
}

/// The reasons of every row of `batch` (scored `scores`) whose job asks for them, computed with
/// `logits` (the worker's model: host rows in, logits out) over at most `chunk` rows at a time.
pub(super) fn explain(
    batch: &Batch,
    scores: &[f32],
    occlusion: Option<&Occlusion>,
    scratch: &mut Scratch,
    chunk: usize,
    mut logits: impl FnMut(&[f32], &[u32], usize, &mut [f32]) -> Result<(), String>,
) -> Result<Explained, String> {
    let Some(occlusion) = occlusion else {
        return Ok(Explained::default());
    };
    // (part, row in its job) of every row that needs reasons.
    let mut wanted = Vec::new();
    let mut at = 0;
    for (index, part) in batch.parts.iter().enumerate() {
        if let Some(from) = part.job.explain_from {
            for i in 0..part.len {
                if f64::from(scores[at + i]) >= from {
                    wanted.push((index, part.start + i));
                }
            }
        }
        at += part.len;
    }
    if wanted.is_empty() {
        return Ok(Explained::default());
    }
    // The row itself and one occluded copy per group, all in the same pass.
    let per_row = occlusion.groups() + 1;
    let per_chunk = (chunk / per_row).max(1);
    let mut explained = Vec::with_capacity(wanted.len());
    for rows in wanted.chunks(per_chunk) {
        scratch.numeric.clear();
        scratch.categorical.clear();
        for &(index, row) in rows {
            let f = &batch.parts[index].job.features;
            occlusion.occlude(
                &f.numeric[row * f.n_numeric..(row + 1) * f.n_numeric],
                &f.categorical[row * f.n_categorical..(row + 1) * f.n_categorical],
                &mut scratch.numeric,
                &mut scratch.categorical,
            );
        }
        let n = rows.len() * per_row;
        scratch.out.clear();
        scratch.out.resize(n, 0.0);
        logits(&scratch.numeric, &scratch.categorical, n, &mut scratch.out)?;
        for (k, &(index, row)) in rows.iter().enumerate() {
            let own = &scratch.out[k * per_row..(k + 1) * per_row];
            explained.push((index, row, occlusion.reasons(own)));
        }
    }
    Ok(Explained(explained))
}
