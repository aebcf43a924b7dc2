-- Each chunk's ciphertext checksum is now CRC-64/NVME (`crc64nvme:` and 16
-- hex digits), as S3 computes it; chunks written before keep their SHA-256
-- (64 hex digits). The column says checksum, not SHA-256 (src/checksum.rs).
ALTER TABLE chunks RENAME COLUMN sealed_sha256 TO sealed_checksum;
