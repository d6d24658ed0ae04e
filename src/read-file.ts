/**
 * Reading a file the user named, bounded: only regular files (a FIFO, `/dev/zero`, a socket
 * or a device would block or read forever), and at most a size limit. The file is opened
 * non-blocking (opening a FIFO does not wait for a writer), checked with `fstat` on the
 * open descriptor (no race with a rename), and read up to the size `fstat` reported.
 * @module
 */
import fs from 'node:fs';

/** Error code of {@link readRegularFile} for something that is not a regular file or folder. */
export const NOT_REGULAR = 'ENOTREG';
/** Error code of {@link readRegularFile} for a file over the limit (the code Node uses for > 2 GB). */
export const TOO_LARGE = 'ERR_FS_FILE_TOO_LARGE';

/** Largest file {@link readRegularFile} reads by default: Node's largest Buffer (2 GiB - 1). */
export const MAX_READ = 2 ** 31 - 1;

/** A Node-style error with a `code`, as `fs` throws them. */
function fsError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

/** A short description of a non-regular file, for messages: `a FIFO`, `a character device`, ... */
export function fileKind(st: fs.Stats): string {
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isDirectory()) return 'a folder';
  return 'not a regular file';
}

/**
 * Reads a regular file whole.
 * @param maxBytes - largest size accepted (default {@link MAX_READ})
 * @throws a Node-style error: `fs`'s own codes (`ENOENT`, `EACCES`, `ELOOP`, ...), `EISDIR`
 *   for a folder, {@link NOT_REGULAR} for a FIFO, device or socket, {@link TOO_LARGE} over `maxBytes`.
 */
export function readRegularFile(file: string, maxBytes = MAX_READ): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) throw fsError('EISDIR', `illegal operation on a directory, read '${file}'`);
    if (!st.isFile()) throw fsError(NOT_REGULAR, `${file} is ${fileKind(st)}, not a regular file`);
    if (st.size > maxBytes) throw fsError(TOO_LARGE, `${file} is ${st.size} bytes, more than ${maxBytes}`);
    const buf = Buffer.allocUnsafe(st.size);
    let done = 0;
    while (done < st.size) {
      const n = fs.readSync(fd, buf, done, st.size - done, done);
      if (n === 0) break; // the file shrank while we read it
      done += n;
    }
    return done === st.size ? buf : buf.subarray(0, done);
  } finally {
    fs.closeSync(fd);
  }
}
