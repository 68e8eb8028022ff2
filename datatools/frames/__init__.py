"""A video's frames as a folder or a pack: file names and the completion record (folder),
packs and their rule (packs), the writers extract hands a video's frames to (writers),
pack <-> folder conversion (convert), the LMDB export (lmdb)."""
