/** Counts event-loop turns (one setImmediate each) until stop(), which returns the count: the loop ran meanwhile. */
export function countTurns(): { stop(): number } {
  let turns = 0;
  let done = false;
  const turn = () => {
    turns++;
    if (!done) setImmediate(turn);
  };
  setImmediate(turn);
  return {
    stop: () => {
      done = true;
      return turns;
    },
  };
}
