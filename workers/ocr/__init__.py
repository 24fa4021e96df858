"""OCR of long scans in slices on the `ocr` queue."""
