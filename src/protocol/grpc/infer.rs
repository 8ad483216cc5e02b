//! `ModelInferRequest` read in place: the request's bytes are kept and every string, shape and raw
//! tensor is a range of them, so a call with 25 named inputs costs a handful of allocations instead
//! of prost's three per input (name, datatype, shape) and one per raw content. Typed `contents` and
//! parameter values, rare on the hot path, are decoded with prost as they are met.
//!
//! Same wire semantics as prost's generated decoder for this message, checked against it by the
//! tests: unknown fields (groups too) skipped, packed or unpacked `shape`, the last occurrence of a
//! string field wins, repeated occurrences of a message field merge, strings must be UTF-8.

use std::ops::Range;

use bytes::Bytes;
use prost::Message;

use super::{InferParameter, InferTensorContents, ModelInferRequest};

/// Why a request's bytes are not a `ModelInferRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ModelInferRequest: {0}")]
pub struct DecodeError(&'static str);

/// One input tensor of an [`InferCall`].
#[derive(Debug, Clone, Default)]
struct Input {
    name: Range<usize>,
    datatype: Range<usize>,
    /// Its dimensions in [`InferCall::shapes`].
    shape: Range<usize>,
}

/// A `ModelInferRequest` whose fields are ranges of the received bytes.
#[derive(Debug, Clone)]
pub struct InferCall {
    buf: Bytes,
    model_name: Range<usize>,
    model_version: Range<usize>,
    id: Range<usize>,
    /// `parameters` entries: (key, value), in the order sent.
    parameters: Vec<(Range<usize>, InferParameter)>,
    inputs: Vec<Input>,
    shapes: Vec<i64>,
    /// (input index, its typed contents), for the inputs that sent some.
    contents: Vec<(usize, InferTensorContents)>,
    outputs: Vec<Range<usize>>,
    raw: Vec<Range<usize>>,
}

/// A view of one input: name, datatype and shape, borrowed from its call.
#[derive(Debug, Clone, Copy)]
pub struct InputView<'a> {
    /// Input name.
    pub name: &'a str,
    /// Datatype as sent.
    pub datatype: &'a str,
    /// Shape as sent.
    pub shape: &'a [i64],
}

impl InferCall {
    /// Reads `buf` as an encoded `ModelInferRequest`.
    pub fn decode(buf: Bytes) -> Result<InferCall, DecodeError> {
        let mut call = InferCall {
            // Sized for a transaction's fields (25 inputs of shape [1, 1]): no regrowth on the
            // common call, one allocation each.
            inputs: Vec::with_capacity(32),
            shapes: Vec::with_capacity(64),
            raw: Vec::with_capacity(32),
            ..InferCall::empty(buf)
        };
        let buf = call.buf.clone();
        let mut r = Reader::new(&buf, 0..buf.len());
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, LEN) => call.model_name = r.string()?,
                (2, LEN) => call.model_version = r.string()?,
                (3, LEN) => call.id = r.string()?,
                (4, LEN) => {
                    let entry = r.bytes()?;
                    call.parameters.push(map_entry(&buf, entry)?);
                }
                (5, LEN) => {
                    let span = r.bytes()?;
                    let input = call.input(&buf, span)?;
                    call.inputs.push(input);
                }
                (6, LEN) => {
                    let span = r.bytes()?;
                    call.outputs.push(output_name(&buf, span)?);
                }
                (7, LEN) => call.raw.push(r.bytes()?),
                (1..=7, _) => return Err(DecodeError("a field has the wrong wire type")),
                _ => r.skip(field, wire)?,
            }
        }
        Ok(call)
    }

    /// Reads the next input tensor (index `self.inputs.len()`); its dimensions go to `shapes`,
    /// its typed contents to `contents`.
    fn input(&mut self, buf: &[u8], span: Range<usize>) -> Result<Input, DecodeError> {
        let index = self.inputs.len();
        let mut input = Input::default();
        let start = self.shapes.len();
        let mut r = Reader::new(buf, span);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, LEN) => input.name = r.string()?,
                (2, LEN) => input.datatype = r.string()?,
                (3, VARINT) => self.shapes.push(r.varint()? as i64),
                (3, LEN) => {
                    let packed = r.bytes()?;
                    let mut p = Reader::new(buf, packed);
                    while !p.done() {
                        self.shapes.push(p.varint()? as i64);
                    }
                }
                (4, LEN) => {
                    // Per-input parameters are accepted and not used (as prost's map, checked).
                    let entry = r.bytes()?;
                    map_entry(buf, entry)?;
                }
                (5, LEN) => {
                    let span = r.bytes()?;
                    // A repeated `contents` field merges into the first, as prost's does.
                    let k = match self.contents.iter().position(|(i, _)| *i == index) {
                        Some(k) => k,
                        None => {
                            self.contents.push((index, InferTensorContents::default()));
                            self.contents.len() - 1
                        }
                    };
                    self.contents[k]
                        .1
                        .merge(&buf[span])
                        .map_err(|_| DecodeError("an input's contents are malformed"))?;
                }
                (1..=5, _) => return Err(DecodeError("an input field has the wrong wire type")),
                _ => r.skip(field, wire)?,
            }
        }
        input.shape = start..self.shapes.len();
        Ok(input)
    }

    /// The text at `span`: only ranges read by [`Reader::string`] (or empty ones) are passed here.
    fn text(&self, span: &Range<usize>) -> &str {
        let bytes = &self.buf[span.clone()];
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: every range this struct keeps for a string field (names, datatypes, keys, ids)
        // was checked as UTF-8 by `Reader::string` when the message was read, and `buf` is never
        // changed after; validating each name again on every access cost ~0.3 µs per call.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// `model_name`.
    pub fn model_name(&self) -> &str {
        self.text(&self.model_name)
    }

    /// `model_version` (empty: not given).
    pub fn model_version(&self) -> &str {
        self.text(&self.model_version)
    }

    /// `id` (echoed in the answer).
    pub fn id(&self) -> &str {
        self.text(&self.id)
    }

    /// The input tensors, in request order.
    pub fn inputs(&self) -> impl Iterator<Item = InputView<'_>> {
        self.inputs.iter().map(|i| InputView {
            name: self.text(&i.name),
            datatype: self.text(&i.datatype),
            shape: &self.shapes[i.shape.clone()],
        })
    }

    /// How many input tensors.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// `raw_input_contents`, in request order.
    pub fn raw_input_contents(&self) -> impl Iterator<Item = &[u8]> {
        self.raw.iter().map(|r| &self.buf[r.clone()])
    }

    /// How many raw contents.
    pub fn raw_count(&self) -> usize {
        self.raw.len()
    }

    /// The requested output names, in request order.
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|o| self.text(o))
    }

    /// Input `index`'s typed `contents`, when it sent some.
    pub fn typed_contents(&self, index: usize) -> Option<&InferTensorContents> {
        self.contents
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, c)| c)
    }

    /// The request parameter `key`; the last entry wins, as in a protobuf map.
    pub fn parameter(&self, key: &str) -> Option<&InferParameter> {
        self.parameters
            .iter()
            .rev()
            .find(|(k, _)| self.text(k) == key)
            .map(|(_, v)| v)
    }

    /// The same request as prost's generated type.
    pub fn from_message(request: &ModelInferRequest) -> InferCall {
        // Re-encoding a message prost built always reads back.
        InferCall::decode(Bytes::from(request.encode_to_vec()))
            .unwrap_or_else(|_| InferCall::empty(Bytes::new()))
    }

    /// A call of `buf` with every field empty.
    fn empty(buf: Bytes) -> InferCall {
        InferCall {
            buf,
            model_name: 0..0,
            model_version: 0..0,
            id: 0..0,
            parameters: Vec::new(),
            inputs: Vec::new(),
            shapes: Vec::new(),
            contents: Vec::new(),
            outputs: Vec::new(),
            raw: Vec::new(),
        }
    }
}

/// A `map<string, InferParameter>` entry: the key's range and the value, its occurrences merged.
fn map_entry(
    buf: &[u8],
    span: Range<usize>,
) -> Result<(Range<usize>, InferParameter), DecodeError> {
    let mut key = span.start..span.start;
    let mut value = InferParameter::default();
    let mut r = Reader::new(buf, span);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => key = r.string()?,
            (2, LEN) => {
                let v = r.bytes()?;
                value
                    .merge(&buf[v])
                    .map_err(|_| DecodeError("a parameter's value is malformed"))?;
            }
            (1..=2, _) => return Err(DecodeError("a parameter has the wrong wire type")),
            _ => r.skip(field, wire)?,
        }
    }
    Ok((key, value))
}

/// The `name` of an `InferRequestedOutputTensor`.
fn output_name(buf: &[u8], span: Range<usize>) -> Result<Range<usize>, DecodeError> {
    let mut name = span.start..span.start;
    let mut r = Reader::new(buf, span);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => name = r.string()?,
            (2, LEN) => {
                let entry = r.bytes()?;
                map_entry(buf, entry)?;
            }
            (1..=2, _) => return Err(DecodeError("an output field has the wrong wire type")),
            _ => r.skip(field, wire)?,
        }
    }
    Ok(name)
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], span: Range<usize>) -> Self {
        Reader {
            buf,
            at: span.start,
            end: span.end,
        }
    }

    fn done(&self) -> bool {
        self.at >= self.end
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Keys, short lengths and shape dimensions are one byte: most of the varints of a call.
        if self.at < self.end
            && let Some(&byte) = self.buf.get(self.at)
            && byte < 0x80
        {
            self.at += 1;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.at)
                .filter(|_| self.at < self.end)
                .ok_or(DecodeError("a varint runs past its message"))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                // The tenth byte may only carry the top bit.
                if shift == 63 && byte > 1 {
                    return Err(DecodeError("a varint overflows 64 bits"));
                }
                return Ok(value);
            }
        }
        Err(DecodeError("a varint is longer than 10 bytes"))
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    #[inline(always)]
    fn key(&mut self) -> Result<Option<(u32, u8)>, DecodeError> {
        if self.done() {
            return Ok(None);
        }
        let key =
            u32::try_from(self.varint()?).map_err(|_| DecodeError("a field key is too large"))?;
        let field = key >> 3;
        if field == 0 {
            return Err(DecodeError("field number 0"));
        }
        Ok(Some((field, (key & 7) as u8)))
    }

    fn bytes(&mut self) -> Result<Range<usize>, DecodeError> {
        let len =
            usize::try_from(self.varint()?).map_err(|_| DecodeError("a length is too large"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.end)
            .ok_or(DecodeError("a length runs past its message"))?;
        let span = self.at..end;
        self.at = end;
        Ok(span)
    }

    fn string(&mut self) -> Result<Range<usize>, DecodeError> {
        let span = self.bytes()?;
        std::str::from_utf8(&self.buf[span.clone()])
            .map_err(|_| DecodeError("a string is not UTF-8"))?;
        Ok(span)
    }

    fn advance(&mut self, n: usize) -> Result<(), DecodeError> {
        self.at = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.end)
            .ok_or(DecodeError("a field runs past its message"))?;
        Ok(())
    }

    /// Skips an unknown field's value (a whole group, for a group's start).
    fn skip(&mut self, field: u32, wire: u8) -> Result<(), DecodeError> {
        self.skip_nested(wire, Some(field), 0)
    }

    fn skip_nested(&mut self, wire: u8, field: Option<u32>, depth: u32) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(|_| ()),
            FIXED64 => self.advance(8),
            LEN => self.bytes().map(|_| ()),
            FIXED32 => self.advance(4),
            START_GROUP => {
                // prost's recursion limit.
                if depth >= 100 {
                    return Err(DecodeError("groups nested too deep"));
                }
                let open = field.ok_or(DecodeError("a group without a field"))?;
                loop {
                    let (f, w) = self.key()?.ok_or(DecodeError("a group is not closed"))?;
                    if w == END_GROUP {
                        return if f == open {
                            Ok(())
                        } else {
                            Err(DecodeError("a group closes another field"))
                        };
                    }
                    self.skip_nested(w, Some(f), depth + 1)?;
                }
            }
            END_GROUP => Err(DecodeError("a group end without its start")),
            _ => Err(DecodeError("an invalid wire type")),
        }
    }
}

#[cfg(test)]
#[path = "infer_tests.rs"]
mod tests;
