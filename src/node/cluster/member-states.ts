/**
 * The other members' published hive states, validated on receipt: each is parsed once per version,
 * and one that does not parse is left out of the view (and reported), never trusted.
 */
import type { ViewEntry } from '../../p2p/index.js';
import { hiveStateSchema, type HiveState } from '../../shared/view.js';
import { compiled } from '../../shared/compiled-schema.js';

export interface RemoteHiveState {
  id: string;
  lastSeen: number;
  state: HiveState;
}

export interface MemberStatesInit {
  /** This node's peer id: its own entry is not a remote hive. */
  self: string;
  /** A member's state of this version did not parse. */
  onInvalid: (peer: string, version: number) => void;
}

export interface MemberStates {
  /** The parsed states of the live members in `view` other than this node. */
  parse(view: ViewEntry[]): RemoteHiveState[];
}

export function createMemberStates(init: MemberStatesInit): MemberStates {
  const parsed = new Map<string, { version: number; state: HiveState | undefined }>();

  const stateOf = (id: string, version: number, raw: unknown): HiveState | undefined => {
    const known = parsed.get(id);
    if (known?.version === version) return known.state;
    const result = compiled(hiveStateSchema).safeParse(raw);
    if (!result.success && version > 0) init.onInvalid(id, version);
    const state = result.success ? result.data : undefined;
    parsed.set(id, { version, state });
    return state;
  };

  return {
    parse(view) {
      // members that left take their parsed states with them
      const present = new Set(view.map((entry) => entry.id));
      for (const id of parsed.keys()) if (!present.has(id)) parsed.delete(id);
      return view.flatMap((entry) => {
        if (entry.id === init.self) return [];
        const state = stateOf(entry.id, entry.version, entry.state);
        return state === undefined ? [] : [{ id: entry.id, lastSeen: entry.lastSeen, state }];
      });
    },
  };
}
