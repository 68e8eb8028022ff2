"""The download step: `session` runs one dataset's download (the dataset module says how its
archives unpack), `http` fetches one file with resume, retries and checksums, `archives`
unpacks zip, tar and RAR after checking every member."""
