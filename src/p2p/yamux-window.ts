/**
 * Window updates once half a stream's receive window is used, as the yamux implementations in Go
 * and Rust send them, instead of after every data frame. @libp2p/yamux (8.x) answers each data frame
 * it receives with a window-update frame: on a token stream that is one more encrypted frame, one
 * more socket write on the receiver and one more frame to decrypt and handle on the sender, per
 * token — the largest single cost of relaying a job's tokens between nodes (bench:routing).
 *
 * The library has no setting for it, so its stream's `sendWindowUpdate` is wrapped on the prototype:
 * an update that carries no flags (an established stream) and would give back less than half the
 * window is skipped; every other call goes through unchanged (opening flags, a paused stream, the
 * window's growth). The sender never stalls: with half the window still granted it keeps writing,
 * and the update comes before the other half is used. Should a later version change that shape,
 * nothing breaks; streams just cost what they did, and `installYamuxWindowHysteresis` says so by
 * returning false.
 */
import { StreamState, YamuxStream } from '@libp2p/yamux/stream';

interface WindowFields {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
  sendWindowUpdate(): void;
}

let installed = false;

export function installYamuxWindowHysteresis(): boolean {
  if (installed) return true;
  const proto = YamuxStream.prototype as unknown as Partial<WindowFields>;
  const original = proto.sendWindowUpdate;
  if (typeof original !== 'function' || StreamState.Established === undefined) return false;
  proto.sendWindowUpdate = function (this: WindowFields): void {
    const { state, recvWindow, recvWindowCapacity } = this;
    // fields of another shape: leave the library's own behaviour
    if (typeof recvWindow === 'number' && typeof recvWindowCapacity === 'number') {
      if (state === StreamState.Established && recvWindow - recvWindowCapacity < recvWindow / 2) return;
    }
    original.call(this);
  };
  installed = true;
  return true;
}
