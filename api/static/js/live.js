// The live feed of run snapshots. EventSource reconnects by itself (and sends Last-Event-ID);
// only when the browser gives up (readyState CLOSED) do we open a new one.

export function connectLive({ onSnapshot, onResync, onState }) {
  let source = null;
  let hadError = false;

  function open() {
    onState("connecting");
    source = new EventSource("/api/import-logs/stream");
    source.addEventListener("open", () => {
      onState("live");
      if (hadError) onResync("reconnected"); // events lost while the API was away are in MongoDB
      hadError = false;
    });
    source.addEventListener("import-log", (event) => {
      try {
        onSnapshot(JSON.parse(event.data));
      } catch (err) {
        console.warn("bad import-log event", err);
      }
    });
    source.addEventListener("resync", () => onResync("resync"));
    source.addEventListener("error", () => {
      hadError = true;
      if (source.readyState === EventSource.CLOSED) {
        onState("reconnecting");
        source.close();
        setTimeout(open, 3000);
      } else {
        onState("reconnecting");
      }
    });
  }

  open();
  return () => source && source.close();
}
