/**
 * Semantic colour tokens. Components never name a colour: they ask for `ok`, `warn`, `queen`…, so
 * the monochrome theme (NO_COLOR, https://no-color.org) can keep the meaning with bold, dim,
 * underline and inverse instead.
 */
import { createContext, useContext } from 'react';
import type { NarrationSource } from '../../shared/wire.js';

/** Props spread onto an Ink <Text>. */
export interface TextStyle {
  color?: string;
  bold?: boolean;
  dimColor?: boolean;
  inverse?: boolean;
  underline?: boolean;
}

export type ThemeToken =
  | 'accent'
  | 'muted'
  | 'ok'
  | 'warn'
  | 'error'
  | 'queen'
  | 'local'
  | 'selected'
  | 'activeTab'
  | 'title'
  | 'bar'
  | 'barEmpty';

export interface Theme {
  readonly name: 'color' | 'mono';
  readonly tokens: Readonly<Record<ThemeToken, TextStyle>>;
  readonly sources: Readonly<Record<NarrationSource, TextStyle>>;
}

export const colorTheme: Theme = {
  name: 'color',
  tokens: {
    accent: { color: 'cyan' },
    muted: { color: 'gray' },
    ok: { color: 'green' },
    warn: { color: 'yellow' },
    error: { color: 'red', bold: true },
    queen: { color: 'magenta', bold: true },
    local: { color: 'cyan', bold: true },
    selected: { inverse: true },
    activeTab: { color: 'black', inverse: true, bold: true },
    title: { bold: true },
    bar: { color: 'green' },
    barEmpty: { color: 'gray' },
  },
  sources: {
    keeper: { color: 'cyan' },
    queen: { color: 'magenta' },
    hive: { color: 'yellow' },
    worker: { color: 'green' },
  },
};

export const monoTheme: Theme = {
  name: 'mono',
  tokens: {
    accent: { bold: true },
    muted: { dimColor: true },
    ok: {},
    warn: { underline: true },
    error: { bold: true },
    queen: { bold: true },
    local: { bold: true },
    selected: { inverse: true },
    activeTab: { inverse: true, bold: true },
    title: { bold: true },
    bar: {},
    barEmpty: { dimColor: true },
  },
  sources: { keeper: {}, queen: { bold: true }, hive: {}, worker: {} },
};

/** NO_COLOR, when present and not empty, selects the monochrome theme. */
export function themeFromEnv(env: NodeJS.ProcessEnv = process.env): Theme {
  const noColor = env.NO_COLOR;
  return noColor !== undefined && noColor !== '' ? monoTheme : colorTheme;
}

export const ThemeContext = createContext<Theme>(colorTheme);

export function useTheme(): Theme {
  return useContext(ThemeContext);
}
