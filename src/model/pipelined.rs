//! The seam between a device that keeps batches in flight and the engine loop that feeds it
//! (`engine::pipeline`): a GPU replica implements it, the engine's tests fake it.

use super::staging::PartRows;

/// A model with a fixed number of in-flight slots: `submit` returns at once, `wait` blocks.
pub trait Pipelined {
    /// Names a submitted batch.
    type Ticket;
    /// Sizes the buffers for batches of up to `rows` rows.
    fn reserve(&mut self, rows: usize) -> Result<(), String>;
    /// Whether `submit` can take another batch now.
    fn has_free_slot(&self) -> bool;
    /// Starts a batch of `rows` rows held in `parts`, in order (each request's own feature block:
    /// the model writes them straight into what it uploads).
    fn submit<'a>(
        &mut self,
        parts: impl IntoIterator<Item = PartRows<'a>>,
        rows: usize,
    ) -> Result<Self::Ticket, String>;
    /// Whether a submitted batch has finished (an error counts as finished: `wait` reports it).
    fn is_done(&self, ticket: &Self::Ticket) -> bool;
    /// Waits for a batch and writes its scores into `out`.
    fn wait(&mut self, ticket: Self::Ticket, out: &mut [f32]) -> Result<(), String>;
    /// Why the device can take no more work, once an error has left it unusable. The model records
    /// this itself, from its own calls: the loop only asks.
    fn broken(&self) -> Option<String>;

    /// The logits of a batch, synchronously (reason codes): submitted, waited for, and turned from
    /// the pass's probabilities into logits. Needs a free slot.
    fn logits(
        &mut self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), String> {
        let ticket = self.submit(std::iter::once((numeric, categorical)), rows)?;
        self.wait(ticket, out)?;
        super::explain::to_logits(out);
        Ok(())
    }
}
