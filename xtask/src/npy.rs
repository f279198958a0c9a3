//! Writing `.npy` files (NumPy format 1.0), little-endian, C order.

use std::path::Path;

pub fn write_f32(path: &Path, data: &[f32], shape: &[usize]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(path, "<f4", shape, &bytes)
}

pub fn write_i64(path: &Path, data: &[i64], shape: &[usize]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(path, "<i8", shape, &bytes)
}

fn write(path: &Path, descr: &str, shape: &[usize], body: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        shape.iter().product::<usize>() * descr[2..].parse::<usize>()? == body.len(),
        "npy: {} bytes do not fill shape {shape:?}",
        body.len()
    );
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // magic (6) + version (2) + header length (2) + header + '\n', padded to a multiple of 64
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    crate::write_file(path, &out)
}
