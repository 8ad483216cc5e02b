//! A batch on its way to a device: one block of 32-bit words (every row's numeric features as f32
//! bits, then every row's categorical ids), written straight from the requests' own feature blocks
//! into the upload buffer — no gathered copy of the batch in between — and, for a captured CUDA
//! graph, laid out and zero-padded for the graph's batch size (its *bucket*).
//!
//! On the CPU this is what a GPU replica's host side does per batch; it lives here, outside the
//! `cuda` feature, so that CI tests the layout, the padding and the id checks without a GPU.

/// One part of a batch: row-major numeric features and categorical ids of the same rows.
pub type PartRows<'a> = (&'a [f32], &'a [u32]);

/// The batch size a CUDA graph is captured for, for a batch of `rows`: the next power of two, or
/// `capacity` (the largest batch the buffers hold) when that is smaller. Powers of two keep the
/// graphs to a few dozen per replica at the price of at most twice the rows in the kernels, which
/// costs nothing where a graph helps: small, launch-bound batches.
pub fn bucket(rows: usize, capacity: usize) -> usize {
    rows.next_power_of_two().min(capacity).max(rows)
}

/// Every bucket [`bucket`] gives for batches of 1 to `capacity` rows, smallest first.
pub fn buckets(capacity: usize) -> impl Iterator<Item = usize> {
    std::iter::successors(Some(1usize), |b| b.checked_mul(2))
        .take_while(move |&b| b < capacity)
        .chain(std::iter::once(capacity.max(1)))
}

/// Writes `parts` (a batch of `rows` rows, in order) into `dst` laid out for `bucket` rows:
/// numeric bits at `[0, bucket × n_numeric)`, ids from `bucket × n_numeric`. Rows past `rows` are
/// zeros, which every table holds (id 0) and whose scores nobody reads. Each id is checked against
/// its table on the way: the kernels index tables without bounds checks.
pub fn stage<'a>(
    dst: &mut [u32],
    parts: impl IntoIterator<Item = PartRows<'a>>,
    rows: usize,
    bucket: usize,
    n_numeric: usize,
    cardinalities: &[u32],
) -> Result<(), String> {
    let (nn, nc) = (n_numeric, cardinalities.len());
    let words = bucket * (nn + nc);
    if rows > bucket || dst.len() < words {
        return Err(format!(
            "a batch of {rows} rows does not fit a staging buffer of {} words laid out for {bucket} rows",
            dst.len()
        ));
    }
    let (numeric_dst, ids_dst) = dst[..words].split_at_mut(bucket * nn);
    let mut at = 0;
    for (numeric, ids) in parts {
        let part_rows = match (nn, nc) {
            (0, 0) => 0,
            (0, _) => ids.len() / nc,
            _ => numeric.len() / nn,
        };
        if numeric.len() != part_rows * nn || ids.len() != part_rows * nc {
            return Err(format!(
                "a part of {} numeric values and {} ids is not whole rows of {nn} numeric and {nc} categorical features",
                numeric.len(),
                ids.len()
            ));
        }
        if at + part_rows > rows {
            return Err(format!("the parts hold more than the batch's {rows} rows"));
        }
        for (slot, v) in numeric_dst[at * nn..(at + part_rows) * nn]
            .iter_mut()
            .zip(numeric)
        {
            *slot = v.to_bits();
        }
        copy_checked_ids(
            &mut ids_dst[at * nc..(at + part_rows) * nc],
            ids,
            cardinalities,
        )?;
        at += part_rows;
    }
    if at != rows {
        return Err(format!("the parts hold {at} rows, the batch {rows}"));
    }
    numeric_dst[rows * nn..].fill(0);
    ids_dst[rows * nc..].fill(0);
    Ok(())
}

/// Copies row-major category ids into `dst`, checking each against its column's table on the way.
/// Row by row with the table sizes zipped alongside: indexing them by `i % columns` cost a division
/// per id, 2.3 ms of host time per 65,536-row batch on the H100 machine — four times the forward.
pub fn copy_checked_ids(dst: &mut [u32], ids: &[u32], cardinalities: &[u32]) -> Result<(), String> {
    let columns = cardinalities.len();
    if columns == 0 {
        return Ok(());
    }
    let mut in_range = true;
    for (dst, row) in dst.chunks_exact_mut(columns).zip(ids.chunks_exact(columns)) {
        for ((slot, &id), &size) in dst.iter_mut().zip(row).zip(cardinalities) {
            in_range &= id < size;
            *slot = id;
        }
    }
    if in_range {
        return Ok(());
    }
    let (i, (&id, &size)) = ids
        .iter()
        .zip(cardinalities.iter().cycle())
        .enumerate()
        .find(|(_, (id, size))| id >= size)
        .unwrap_or((0, (&0, &0)));
    Err(format!(
        "categorical column {} has index {id}, outside its embedding table of {size} rows",
        i % columns
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_copied_and_checked_against_their_own_column() {
        let sizes = [3, 10];
        let ids = [2, 9, 0, 4, 1, 0];
        let mut dst = [u32::MAX; 6];
        copy_checked_ids(&mut dst, &ids, &sizes).unwrap();
        assert_eq!(dst, ids);
        // 3 is in range for column 1 (10 rows) but not for column 0 (3 rows), in row 2.
        let bad = [2, 9, 0, 4, 3, 0];
        let err = copy_checked_ids(&mut dst, &bad, &sizes).unwrap_err();
        assert_eq!(
            err,
            "categorical column 0 has index 3, outside its embedding table of 3 rows"
        );
        let mut none: [u32; 0] = [];
        assert!(
            copy_checked_ids(&mut none, &[], &[]).is_ok(),
            "no categorical columns"
        );
    }

    #[test]
    fn buckets_are_powers_of_two_up_to_the_capacity() {
        let cases = [
            (1, 1024, 1),
            (2, 1024, 2),
            (3, 1024, 4),
            (512, 1024, 512),
            (513, 1024, 1024),
            (1024, 1024, 1024),
            // A capacity that is no power of two is a bucket of its own.
            (2100, 3000, 3000),
            (1500, 3000, 2048),
            // Past the capacity (the buffers grow first): the batch itself.
            (5000, 3000, 5000),
        ];
        for (rows, capacity, want) in cases {
            assert_eq!(
                bucket(rows, capacity),
                want,
                "{rows} rows, capacity {capacity}"
            );
        }
        assert_eq!(buckets(1024).count(), 11, "1, 2, 4, …, 1024");
        for capacity in [1, 2, 3, 1000, 1024, 3000] {
            let all: Vec<usize> = buckets(capacity).collect();
            assert_eq!(all.last(), Some(&capacity));
            for rows in 1..=capacity {
                assert!(
                    all.contains(&bucket(rows, capacity)),
                    "{rows} rows, capacity {capacity}: bucket {} is not captured",
                    bucket(rows, capacity)
                );
            }
        }
    }

    /// The layout the kernels read, built the plain way: the parts concatenated, then each
    /// block padded to the bucket.
    fn reference(parts: &[(Vec<f32>, Vec<u32>)], bucket: usize, nn: usize, nc: usize) -> Vec<u32> {
        let mut numeric: Vec<u32> = parts
            .iter()
            .flat_map(|(n, _)| n.iter().map(|v| v.to_bits()))
            .collect();
        let mut ids: Vec<u32> = parts.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        numeric.resize(bucket * nn, 0);
        ids.resize(bucket * nc, 0);
        numeric.extend(ids);
        numeric
    }

    #[test]
    fn parts_are_staged_in_order_and_padded_to_the_bucket() {
        let (nn, sizes) = (3, [5u32, 7]);
        // Parts of 1, 3 and 2 rows, as a batch of single transactions and a larger request give.
        let part = |rows: usize, seed: u32| {
            let numeric = (0..rows * nn)
                .map(|i| seed as f32 + i as f32 * 0.5 - 1.25)
                .collect::<Vec<f32>>();
            let ids = (0..rows * 2)
                .map(|i| (seed + i as u32) % sizes[i % 2])
                .collect::<Vec<u32>>();
            (numeric, ids)
        };
        let parts = vec![part(1, 1), part(3, 2), part(2, 3)];
        for bucket in [6, 8] {
            // Garbage first: padding must be written, not assumed.
            let mut dst = vec![u32::MAX; bucket * (nn + 2) + 5];
            let borrowed = parts.iter().map(|(n, c)| (&n[..], &c[..]));
            stage(&mut dst, borrowed, 6, bucket, nn, &sizes).unwrap();
            assert_eq!(
                &dst[..bucket * (nn + 2)],
                &reference(&parts, bucket, nn, 2)[..],
                "bucket {bucket}"
            );
            assert!(
                dst[bucket * (nn + 2)..].iter().all(|&w| w == u32::MAX),
                "nothing is written past the bucket's words"
            );
        }
    }

    #[test]
    fn a_batch_that_does_not_match_its_parts_is_refused() {
        let sizes = [4u32];
        let numeric = [1.0f32, 2.0, 3.0, 4.0];
        let ids = [1u32, 2];
        let mut dst = vec![0u32; 64];
        let one = || std::iter::once((&numeric[..], &ids[..]));
        assert_eq!(
            stage(&mut dst, one(), 3, 4, 2, &sizes).unwrap_err(),
            "the parts hold 2 rows, the batch 3"
        );
        assert_eq!(
            stage(&mut dst, one(), 1, 4, 2, &sizes).unwrap_err(),
            "the parts hold more than the batch's 1 rows"
        );
        assert_eq!(
            stage(&mut dst, one(), 2, 1, 2, &sizes).unwrap_err(),
            "a batch of 2 rows does not fit a staging buffer of 64 words laid out for 1 rows"
        );
        let ragged = std::iter::once((&numeric[..3], &ids[..]));
        assert!(
            stage(&mut dst, ragged, 2, 2, 2, &sizes)
                .unwrap_err()
                .contains("not whole rows")
        );
        let out_of_range = [1u32, 4];
        let bad = std::iter::once((&numeric[..], &out_of_range[..]));
        assert_eq!(
            stage(&mut dst, bad, 2, 2, 2, &sizes).unwrap_err(),
            "categorical column 0 has index 4, outside its embedding table of 4 rows"
        );
        let mut small = vec![0u32; 5];
        assert!(
            stage(&mut small, one(), 2, 2, 2, &sizes).is_err(),
            "6 words needed"
        );
    }
}
