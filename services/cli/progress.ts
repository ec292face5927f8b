// A progress display on stderr: one redrawn line on a terminal, a few plain lines otherwise.

export function progressBar(label: string): (done: number, total: number, detail: string) => void {
  const tty = process.stderr.isTTY === true;
  let lastPct = -1;
  return (done, total, detail) => {
    const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
    if (tty) {
      const width = 30;
      const fill = Math.round((width * pct) / 100);
      const line = `${label} [${"#".repeat(fill)}${".".repeat(width - fill)}] ${pct}% ${detail}`;
      process.stderr.write(`\r${line.slice(0, 100).padEnd(100)}`);
      if (done >= total) process.stderr.write("\n");
    } else if (pct >= lastPct + 25 || done >= total) {
      if (pct !== lastPct) process.stderr.write(`${label}: ${pct}% (${done}/${total})\n`);
      lastPct = pct;
    }
  };
}
